"""fraud across referrals (issue #20): the conversions' new hashed screening inputs and the time
they arrived, advocate sightings, risk scores on reviews, advocate risk, the bulk review audit

Revision ID: 0013
(Numbered by the lead; down_revision is this worktree's head: the lead re-chains it on merge.)
"""

from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    op.execute(
        """
        -- Hashed on arrival with the keyed hash of IP addresses (personal data, never in
        -- clear): the IP's /24 (IPv4) or /48 (IPv6), the user agent with that network, the
        -- shipping address and the payment fingerprint. received_at: when the platform took
        -- the conversion in (the reported occurred_at cannot move it).
        ALTER TABLE conversions
            ADD COLUMN ip_prefix_hash text,
            ADD COLUMN ua_network_hash text,
            ADD COLUMN address_hash text,
            ADD COLUMN payment_hash text,
            ADD COLUMN email_stem_hash text,
            ADD COLUMN email_domain_hash text,
            ADD COLUMN received_at timestamptz;
        UPDATE conversions SET received_at = created_at WHERE received_at IS NULL;
        -- The ring rule reads the referrals sharing a signal value, by arrival: one index per
        -- signal, holding only the rows that have one.
        CREATE INDEX conversions_ring_network
            ON conversions (ip_prefix_hash, tenant_id, received_at)
            WHERE ip_prefix_hash IS NOT NULL;
        CREATE INDEX conversions_ring_ua
            ON conversions (ua_network_hash, tenant_id, received_at)
            WHERE ua_network_hash IS NOT NULL;
        CREATE INDEX conversions_ring_device
            ON conversions (device_hash, tenant_id, received_at) WHERE device_hash IS NOT NULL;
        CREATE INDEX conversions_ring_email_stem
            ON conversions (email_stem_hash, tenant_id, received_at)
            WHERE email_stem_hash IS NOT NULL;
        CREATE INDEX conversions_ring_email_domain
            ON conversions (email_domain_hash, tenant_id, received_at)
            WHERE email_domain_hash IS NOT NULL;
        CREATE INDEX conversions_ring_address
            ON conversions (address_hash, tenant_id, received_at) WHERE address_hash IS NOT NULL;
        CREATE INDEX conversions_ring_payment
            ON conversions (payment_hash, tenant_id, received_at) WHERE payment_hash IS NOT NULL;

        -- Where an advocate was seen (link-service's advocate.sighted.v1: enrolment through the
        -- API with a network or device, opening their page): hashes only.
        CREATE TABLE advocate_sightings (
            id          text PRIMARY KEY,
            tenant_id   text NOT NULL,
            advocate_id text NOT NULL,
            seen_at     timestamptz NOT NULL,
            source      text NOT NULL,
            ip_hash     text,
            device_hash text
        );
        CREATE INDEX advocate_sightings_advocate ON advocate_sightings (advocate_id, seen_at);

        -- The review queue is worked riskiest first.
        ALTER TABLE reviews ADD COLUMN risk_score integer NOT NULL DEFAULT 0;
        CREATE INDEX reviews_risk ON reviews (tenant_id, status, risk_score DESC, id);

        -- Per advocate: referrals denied (by screening or a reviewer), flagged, their riskiest
        -- referral's score (the advocate's risk score is computed from these) and when the
        -- platform blocked them for it.
        CREATE TABLE advocate_risk (
            advocate_id  text PRIMARY KEY,
            tenant_id    text NOT NULL,
            denied       integer NOT NULL DEFAULT 0,
            flagged      integer NOT NULL DEFAULT 0,
            max_score    integer NOT NULL DEFAULT 0,
            blocked_at   timestamptz,
            updated_at   timestamptz NOT NULL DEFAULT now()
        );

        -- Every bulk review decision: who decided what on which reviews, and why.
        CREATE TABLE review_audit (
            id          text PRIMARY KEY,
            tenant_id   text NOT NULL,
            decision    text NOT NULL CHECK (decision IN ('approve', 'deny')),
            review_ids  text[] NOT NULL,
            changed_ids text[] NOT NULL,
            reason      text NOT NULL,
            decided_by  text,
            key_id      text,
            created_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX review_audit_tenant ON review_audit (tenant_id, created_at);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE review_audit, advocate_risk, advocate_sightings;
        DROP INDEX reviews_risk;
        ALTER TABLE reviews DROP COLUMN risk_score;
        DROP INDEX conversions_ring_network, conversions_ring_ua, conversions_ring_device,
                   conversions_ring_email_stem, conversions_ring_email_domain,
                   conversions_ring_address, conversions_ring_payment;
        ALTER TABLE conversions DROP COLUMN ip_prefix_hash, DROP COLUMN ua_network_hash,
            DROP COLUMN address_hash, DROP COLUMN payment_hash, DROP COLUMN email_stem_hash,
            DROP COLUMN email_domain_hash, DROP COLUMN received_at;
        """
    )
