"""`python -m ddl [overrides]` is `ddl-train [overrides]`."""
from ddl.cli import main

main()
