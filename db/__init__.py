"""Where batches are kept: ``models`` (the tables), ``engine`` (the pooler-safe
``Database``), ``batches`` (every read and write of a batch), ``schema`` (the check of
the live tables)."""
