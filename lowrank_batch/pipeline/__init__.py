"""Ray: listing sources, work units, the encode actors and the job that runs them."""
