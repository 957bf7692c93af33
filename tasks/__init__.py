"""The tasks, which do the work: ``scrape`` (a domain, or a sub-batch of domains),
``persist`` (the batch's database steps); ``attempt`` is one domain without Prefect,
for worker processes. Importing this package imports nothing else."""
