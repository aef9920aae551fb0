from moec.zoo.graphs import *  # noqa: F401,F403
from moec.zoo.graphs import near_misses  # noqa: F401
