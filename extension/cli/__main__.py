import sys

from extension.cli.main import main

sys.exit(main())
