import sys

from trainers.train import main

sys.exit(main())
