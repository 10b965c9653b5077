//! Why the hub said no, as data: the HTTP status, Azure's error code, the activity
//! outcome and a message that names the device and the cause. Every refusal of a REST
//! request — stream requests and the registry API — is one of these, built with `From`
//! from the error that caused it, so the mapping from causes to replies lives here once.

use http::{Response, StatusCode};

use crate::{
    activity::Outcome,
    auth::AuthError,
    http::{error, Body},
    registry::RegistryError,
    sessions::RequestError,
    stream::LimitError,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// Azure's `errorCode`, which SDKs branch on.
    pub code: &'static str,
    pub outcome: Outcome,
    pub message: String,
}

impl Refusal {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        outcome: Outcome,
        message: impl Into<String>,
    ) -> Self {
        Refusal {
            status,
            code,
            outcome,
            message: message.into(),
        }
    }

    /// Puts what was refused in front of the cause: `stream to device 'd1' refused: …`.
    pub fn about(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Whether the caller failed to authenticate (a wrong, expired or foreign token).
    pub fn is_auth_failure(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
    }

    /// The JSON error reply: `{"errorCode": …, "message": …}`.
    pub fn response(&self) -> Response<Body> {
        error(self.status, self.code, self.message.clone())
    }

    fn unavailable(cause: impl std::fmt::Display) -> Self {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "RegistryUnavailable",
            Outcome::Failed,
            cause.to_string(),
        )
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Registry(e) => Refusal::unavailable(e),
            e => Refusal::new(
                StatusCode::UNAUTHORIZED,
                "IotHubUnauthorizedAccess",
                Outcome::Unauthorized,
                e.to_string(),
            ),
        }
    }
}

impl From<RegistryError> for Refusal {
    fn from(e: RegistryError) -> Self {
        let (status, code, outcome) = match e {
            RegistryError::UnknownDevice(_) => (
                StatusCode::NOT_FOUND,
                "DeviceNotFound",
                Outcome::DeviceOffline,
            ),
            RegistryError::DeviceExists(_) => {
                (StatusCode::CONFLICT, "DeviceAlreadyExists", Outcome::Failed)
            }
            RegistryError::BadDeviceId(_) => {
                (StatusCode::BAD_REQUEST, "InvalidDeviceId", Outcome::Failed)
            }
            e => return Refusal::unavailable(e),
        };
        Refusal::new(status, code, outcome, e.to_string())
    }
}

impl From<LimitError> for Refusal {
    fn from(e: LimitError) -> Self {
        Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            Outcome::Limited,
            e.to_string(),
        )
    }
}

impl From<RequestError> for Refusal {
    fn from(e: RequestError) -> Self {
        let (status, code, outcome) = match e {
            RequestError::Timeout(..) => (
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                Outcome::Timeout,
            ),
            RequestError::Busy(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                Outcome::Limited,
            ),
            RequestError::NotConnected(_) | RequestError::Disconnected(_) => (
                StatusCode::NOT_FOUND,
                "DeviceNotOnline",
                Outcome::DeviceOffline,
            ),
        };
        Refusal::new(status, code, outcome, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_map_to_azure_statuses_and_outcomes() {
        let r = Refusal::from(AuthError::BadSignature).about("stream request for device 'd1'");
        assert_eq!(
            (r.status, r.code, r.outcome),
            (
                StatusCode::UNAUTHORIZED,
                "IotHubUnauthorizedAccess",
                Outcome::Unauthorized
            )
        );
        assert!(r.is_auth_failure());
        assert_eq!(
            r.message,
            "stream request for device 'd1': SAS token signature does not match the key"
        );
        let r = Refusal::from(RequestError::Timeout(
            "d1".into(),
            std::time::Duration::from_secs(3),
        ));
        assert_eq!(
            (r.status, r.outcome),
            (StatusCode::GATEWAY_TIMEOUT, Outcome::Timeout)
        );
        let r = Refusal::from(LimitError::Hub(5));
        assert_eq!(
            (r.status, r.outcome),
            (StatusCode::TOO_MANY_REQUESTS, Outcome::Limited)
        );
        let r = Refusal::from(RegistryError::UnknownDevice("d9".into()));
        assert_eq!(
            (r.status, r.code),
            (StatusCode::NOT_FOUND, "DeviceNotFound")
        );
        assert!(!r.is_auth_failure());
    }
}
