-- A message whose payload holds a secret (a password-reset token) has its
-- payload emptied once it is published: the row stays for the record, with
-- no usable copy of the secret in the database.
ALTER TABLE outbox ADD COLUMN secret boolean NOT NULL DEFAULT false;
