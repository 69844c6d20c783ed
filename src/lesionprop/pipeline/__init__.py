"""The paper's Section 4.3 workflow: baseline -> MM / LP / DD labels -> retrain -> evaluate -> report."""
