from moec.zoo.modules import *  # noqa: F401,F403
from moec.zoo.modules import ALL  # noqa: F401
