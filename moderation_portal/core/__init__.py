"""The portal's shared kernel, importable by every app and importing none of them: the audit
log (with its action enum), append-only facts, access checks, one lease implementation, live
updates, tracing, environment helpers and the API's error shape."""
