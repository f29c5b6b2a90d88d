"""The generations domain's multi-step writes, one module a stage of an image's life:
`generate` (ask the upstream, record what it answered), `storing` (copy the bytes into
our storage), `deleting`, and `maintenance` (verify, repair, migrate)."""
