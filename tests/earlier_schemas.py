"""The tables as `scrapersky db init` created them before Alembic, at each commit that
changed db/models.py (create_all's DDL, compiled from that commit's models): the
earlier revisions of ours that `scrapersky db upgrade` must bring to the head.

- 53852e0: domain_results.batch_id a foreign key to batch_jobs.batch_id, no outcome,
  site_metadata NOT NULL;
- 651ca44: the foreign key gone (ScraperSky's batch_id is not unique);
- 3f28c1b: outcome added, site_metadata nullable (the shape the models still have).

batch_jobs is the same in all three.
"""

from __future__ import annotations

SHAPES = ("53852e0", "651ca44", "3f28c1b")

DDL: dict[tuple[str, str], str] = {}

DDL[("53852e0", "postgresql")] = """\
CREATE TABLE batch_jobs (
    id SERIAL NOT NULL,
    batch_id UUID NOT NULL,
    tenant_id UUID NOT NULL,
    processor_type TEXT NOT NULL,
    status TEXT NOT NULL,
    created_by UUID,
    total_domains INTEGER NOT NULL,
    completed_domains INTEGER NOT NULL,
    failed_domains INTEGER NOT NULL,
    progress DOUBLE PRECISION NOT NULL,
    batch_metadata JSONB NOT NULL,
    options JSONB NOT NULL,
    start_time TIMESTAMP WITH TIME ZONE,
    end_time TIMESTAMP WITH TIME ZONE,
    processing_time DOUBLE PRECISION,
    error TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (batch_id)
);
CREATE INDEX ix_batch_jobs_tenant_id ON batch_jobs (tenant_id);
CREATE TABLE domain_results (
    batch_id UUID NOT NULL,
    domain TEXT NOT NULL,
    final_url TEXT,
    site_metadata JSONB NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (batch_id, domain),
    FOREIGN KEY(batch_id) REFERENCES batch_jobs (batch_id) ON DELETE CASCADE
);
"""

DDL[("53852e0", "sqlite")] = """\
CREATE TABLE batch_jobs (
    id INTEGER NOT NULL,
    batch_id CHAR(32) NOT NULL,
    tenant_id CHAR(32) NOT NULL,
    processor_type TEXT NOT NULL,
    status TEXT NOT NULL,
    created_by CHAR(32),
    total_domains INTEGER NOT NULL,
    completed_domains INTEGER NOT NULL,
    failed_domains INTEGER NOT NULL,
    progress DOUBLE NOT NULL,
    batch_metadata JSON NOT NULL,
    options JSON NOT NULL,
    start_time DATETIME,
    end_time DATETIME,
    processing_time DOUBLE,
    error TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (batch_id)
);
CREATE INDEX ix_batch_jobs_tenant_id ON batch_jobs (tenant_id);
CREATE TABLE domain_results (
    batch_id CHAR(32) NOT NULL,
    domain TEXT NOT NULL,
    final_url TEXT,
    site_metadata JSON NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    PRIMARY KEY (batch_id, domain),
    FOREIGN KEY(batch_id) REFERENCES batch_jobs (batch_id) ON DELETE CASCADE
);
"""

DDL[("651ca44", "postgresql")] = """\
CREATE TABLE batch_jobs (
    id SERIAL NOT NULL,
    batch_id UUID NOT NULL,
    tenant_id UUID NOT NULL,
    processor_type TEXT NOT NULL,
    status TEXT NOT NULL,
    created_by UUID,
    total_domains INTEGER NOT NULL,
    completed_domains INTEGER NOT NULL,
    failed_domains INTEGER NOT NULL,
    progress DOUBLE PRECISION NOT NULL,
    batch_metadata JSONB NOT NULL,
    options JSONB NOT NULL,
    start_time TIMESTAMP WITH TIME ZONE,
    end_time TIMESTAMP WITH TIME ZONE,
    processing_time DOUBLE PRECISION,
    error TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (batch_id)
);
CREATE INDEX ix_batch_jobs_tenant_id ON batch_jobs (tenant_id);
CREATE TABLE domain_results (
    batch_id UUID NOT NULL,
    domain TEXT NOT NULL,
    final_url TEXT,
    site_metadata JSONB NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (batch_id, domain)
);
"""

DDL[("651ca44", "sqlite")] = """\
CREATE TABLE batch_jobs (
    id INTEGER NOT NULL,
    batch_id CHAR(32) NOT NULL,
    tenant_id CHAR(32) NOT NULL,
    processor_type TEXT NOT NULL,
    status TEXT NOT NULL,
    created_by CHAR(32),
    total_domains INTEGER NOT NULL,
    completed_domains INTEGER NOT NULL,
    failed_domains INTEGER NOT NULL,
    progress DOUBLE NOT NULL,
    batch_metadata JSON NOT NULL,
    options JSON NOT NULL,
    start_time DATETIME,
    end_time DATETIME,
    processing_time DOUBLE,
    error TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (batch_id)
);
CREATE INDEX ix_batch_jobs_tenant_id ON batch_jobs (tenant_id);
CREATE TABLE domain_results (
    batch_id CHAR(32) NOT NULL,
    domain TEXT NOT NULL,
    final_url TEXT,
    site_metadata JSON NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    PRIMARY KEY (batch_id, domain)
);
"""

DDL[("3f28c1b", "postgresql")] = """\
CREATE TABLE batch_jobs (
    id SERIAL NOT NULL,
    batch_id UUID NOT NULL,
    tenant_id UUID NOT NULL,
    processor_type TEXT NOT NULL,
    status TEXT NOT NULL,
    created_by UUID,
    total_domains INTEGER NOT NULL,
    completed_domains INTEGER NOT NULL,
    failed_domains INTEGER NOT NULL,
    progress DOUBLE PRECISION NOT NULL,
    batch_metadata JSONB NOT NULL,
    options JSONB NOT NULL,
    start_time TIMESTAMP WITH TIME ZONE,
    end_time TIMESTAMP WITH TIME ZONE,
    processing_time DOUBLE PRECISION,
    error TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (batch_id)
);
CREATE INDEX ix_batch_jobs_tenant_id ON batch_jobs (tenant_id);
CREATE TABLE domain_results (
    batch_id UUID NOT NULL,
    domain TEXT NOT NULL,
    final_url TEXT,
    outcome JSONB,
    site_metadata JSONB,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (batch_id, domain)
);
"""

DDL[("3f28c1b", "sqlite")] = """\
CREATE TABLE batch_jobs (
    id INTEGER NOT NULL,
    batch_id CHAR(32) NOT NULL,
    tenant_id CHAR(32) NOT NULL,
    processor_type TEXT NOT NULL,
    status TEXT NOT NULL,
    created_by CHAR(32),
    total_domains INTEGER NOT NULL,
    completed_domains INTEGER NOT NULL,
    failed_domains INTEGER NOT NULL,
    progress DOUBLE NOT NULL,
    batch_metadata JSON NOT NULL,
    options JSON NOT NULL,
    start_time DATETIME,
    end_time DATETIME,
    processing_time DOUBLE,
    error TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (batch_id)
);
CREATE INDEX ix_batch_jobs_tenant_id ON batch_jobs (tenant_id);
CREATE TABLE domain_results (
    batch_id CHAR(32) NOT NULL,
    domain TEXT NOT NULL,
    final_url TEXT,
    outcome JSON,
    site_metadata JSON,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    PRIMARY KEY (batch_id, domain)
);
"""
