//! Where deployer tells people: GitHub (drift issues, through the REST API). Each adapter owns
//! its vendor's wire format, authentication and rate limits; callers get typed results and
//! errors that never carry a secret.

pub mod github;
pub mod slack;
