//! Where deployer tells people: GitHub (drift issues, through the REST API), Slack (health
//! alerts and rollout notifications, through incoming webhooks) and a generic JSON webhook
//! (rollout notifications). Each adapter owns its vendor's wire format, authentication and rate
//! limits; callers get typed results and errors that never carry a secret. `rollout` decides
//! what a rollout event says and where it goes, bounded so that it never holds up a rollout.

pub mod github;
pub mod rollout;
pub mod slack;
pub mod webhook;
