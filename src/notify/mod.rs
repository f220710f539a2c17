//! Where deployer tells people: GitHub (drift issues, through the REST API) and Slack (health
//! alerts, through incoming webhooks). Each adapter owns its vendor's wire format, authentication
//! and rate limits; callers get typed results and errors that never carry a secret.

pub mod github;
pub mod slack;
