import sys

from moec.cli import main

sys.exit(main())
