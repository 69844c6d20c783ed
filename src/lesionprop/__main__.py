import sys

from lesionprop.cli import main

sys.exit(main())
