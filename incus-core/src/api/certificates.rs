//! Trust: certificates and tokens (used by incus-trust).
