-- The optional MX check of a lead's email domain (ledger/email_dns.py), per workspace; off by
-- default, so the policies stored before it keep their behaviour.
ALTER TABLE quality_settings ADD COLUMN email_mx_check boolean NOT NULL DEFAULT false;
