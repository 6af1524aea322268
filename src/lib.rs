//! tokenwarden: a Kubernetes operator for workspace bearer tokens.
#![forbid(unsafe_code)]
