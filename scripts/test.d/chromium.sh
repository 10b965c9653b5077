# The dashboard's browser test (e2e/tests/dashboard.rs) drives a real headless Chromium:
# Debian's own package, so no browser download at test time. Sourced by scripts/test.
need_cmd chromium chromium
# certutil puts the hub's CA into a throw-away NSS database that Chromium trusts, for the
# dashboard over TLS (`serve --dashboard`): real certificate checks, no error ignored.
need_cmd certutil libnss3-tools
