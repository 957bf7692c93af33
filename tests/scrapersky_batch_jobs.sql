-- batch_jobs as ScraperSky's production schema dump declares it (columns, types,
-- nullability and defaults; its primary key is the serial id, batch_id is not unique).
CREATE TABLE batch_jobs (
    id_uuid uuid NOT NULL,
    created_at timestamp without time zone DEFAULT now() NOT NULL,
    updated_at timestamp without time zone DEFAULT now() NOT NULL,
    tenant_id uuid NOT NULL,
    processor_type character varying NOT NULL,
    status character varying DEFAULT 'pending'::character varying NOT NULL,
    created_by uuid,
    total_domains integer DEFAULT 0,
    completed_domains integer DEFAULT 0,
    failed_domains integer DEFAULT 0,
    progress double precision DEFAULT '0'::double precision,
    batch_metadata jsonb,
    options jsonb,
    start_time timestamp without time zone,
    end_time timestamp without time zone,
    processing_time double precision,
    error character varying,
    id serial PRIMARY KEY,
    batch_id_string character varying,
    batch_id uuid,
    batch_id_original character varying
);
CREATE INDEX ix_batch_jobs_tenant_id ON batch_jobs USING btree (tenant_id);
