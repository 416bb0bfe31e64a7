import os
import sys

# Let tests import the shared fixture writers (tests/ogb_fixtures.py) as plain modules.
sys.path.insert(0, os.path.dirname(__file__))
