"""The tests use the zoo that ships with moec (moec.zoo, also run by `moec conformance`)."""
from moec.zoo import *  # noqa: F401,F403
from moec.zoo import ZOO, ZooEntry, _source_hash, cache_dir, make_inputs, make_module, zoo_inputs  # noqa: F401
