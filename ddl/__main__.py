"""`python -m ddl [overrides]` is `ddl-train [overrides]`."""
from ddl.launch import main

main()
