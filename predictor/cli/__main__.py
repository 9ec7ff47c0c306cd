import sys

from predictor.cli.parser import main

sys.exit(main())
