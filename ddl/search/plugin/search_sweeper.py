"""ddl's search sweeper where Hydra looks for plugins; it is ddl/search/sweeper.py's."""
from ddl.search.sweeper import SearchSweeper as _SearchSweeper


class SearchSweeper(_SearchSweeper):
    """`hydra/sweeper=search` (conf/hydra/sweeper/search.yaml); see ddl.search.sweeper."""
