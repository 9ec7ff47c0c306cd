"""`make bench`: the in-process limit, this server end to end, a naive server, and search alone, in one run."""
