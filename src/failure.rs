//! Why a poll failed: a small fixed set of reasons, each a bounded metric
//! label, with what each one means for retrying.
//!
//! The API names its errors by code (see the API's error list); this module
//! sorts every code, HTTP status and transport fault into one reason.

use std::fmt;

/// The reason a poll failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The API's rate limit was exceeded.
    Throttled,
    /// The API or a gateway in front of it failed.
    ServerError,
    /// The request did not complete: timeout, refused or reset connection.
    Transport,
    /// The credentials were rejected, or the clock is off.
    Auth,
    /// The key lacks the CAM permission `redis:DescribeInstanceBackups`.
    Permission,
    /// The instance does not exist, or is in another region.
    InstanceNotFound,
    /// The API rejected the request's parameters.
    BadRequest,
    /// The answer could not be read.
    BadAnswer,
    /// An error code this exporter does not know.
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 9] = [
        FailureReason::Throttled,
        FailureReason::ServerError,
        FailureReason::Transport,
        FailureReason::Auth,
        FailureReason::Permission,
        FailureReason::InstanceNotFound,
        FailureReason::BadRequest,
        FailureReason::BadAnswer,
        FailureReason::Other,
    ];

    /// The value of the `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Throttled => "throttled",
            FailureReason::ServerError => "server_error",
            FailureReason::Transport => "transport",
            FailureReason::Auth => "auth",
            FailureReason::Permission => "permission",
            FailureReason::InstanceNotFound => "instance_not_found",
            FailureReason::BadRequest => "bad_request",
            FailureReason::BadAnswer => "bad_answer",
            FailureReason::Other => "other",
        }
    }

    pub fn index(self) -> usize {
        FailureReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("ALL lists every reason")
    }

    /// Whether trying the same request again may help.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailureReason::Throttled | FailureReason::ServerError | FailureReason::Transport
        )
    }

    /// Sorts an error code of the API.
    pub fn of_api_code(code: &str) -> Self {
        let family = code.split('.').next().unwrap_or(code);
        match (family, code) {
            ("RequestLimitExceeded", _) => FailureReason::Throttled,
            ("InternalError" | "ServiceUnavailable", _) => FailureReason::ServerError,
            (_, "FailedOperation.SystemError") => FailureReason::ServerError,
            (_, "AuthFailure.UnauthorizedOperation" | "InvalidParameter.PermissionDenied") => {
                FailureReason::Permission
            }
            ("UnauthorizedOperation", _) => FailureReason::Permission,
            ("AuthFailure", _) => FailureReason::Auth,
            ("ResourceNotFound", _) => FailureReason::InstanceNotFound,
            ("InvalidParameter" | "InvalidParameterValue" | "MissingParameter", _) => {
                FailureReason::BadRequest
            }
            ("UnsupportedRegion" | "UnsupportedOperation" | "InvalidAction", _) => {
                FailureReason::BadRequest
            }
            _ => FailureReason::Other,
        }
    }

    /// Sorts an HTTP status other than 200.
    pub fn of_http_status(status: u16) -> Self {
        match status {
            429 => FailureReason::Throttled,
            500..=599 => FailureReason::ServerError,
            _ => FailureReason::BadAnswer,
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_has_its_reason() {
        for (code, reason) in [
            ("RequestLimitExceeded", FailureReason::Throttled),
            (
                "RequestLimitExceeded.UinLimitExceeded",
                FailureReason::Throttled,
            ),
            (
                "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
                FailureReason::Throttled,
            ),
            (
                "RequestLimitExceeded.IPLimitExceeded",
                FailureReason::Throttled,
            ),
            ("InternalError", FailureReason::ServerError),
            ("InternalError.InternalError", FailureReason::ServerError),
            ("FailedOperation.SystemError", FailureReason::ServerError),
            ("ServiceUnavailable", FailureReason::ServerError),
            ("AuthFailure.SignatureExpire", FailureReason::Auth),
            ("AuthFailure.SignatureFailure", FailureReason::Auth),
            ("AuthFailure.SecretIdNotFound", FailureReason::Auth),
            ("AuthFailure.InvalidSecretId", FailureReason::Auth),
            ("AuthFailure.TokenFailure", FailureReason::Auth),
            (
                "UnauthorizedOperation.NoCAMAuthed",
                FailureReason::Permission,
            ),
            (
                "InvalidParameter.PermissionDenied",
                FailureReason::Permission,
            ),
            (
                "AuthFailure.UnauthorizedOperation",
                FailureReason::Permission,
            ),
            (
                "ResourceNotFound.InstanceNotExists",
                FailureReason::InstanceNotFound,
            ),
            (
                "InvalidParameter.InvalidParameter",
                FailureReason::BadRequest,
            ),
            ("InvalidParameterValue", FailureReason::BadRequest),
            ("UnsupportedRegion", FailureReason::BadRequest),
            ("SomethingNew.Entirely", FailureReason::Other),
        ] {
            assert_eq!(FailureReason::of_api_code(code), reason, "{code}");
        }
    }

    #[test]
    fn only_passing_troubles_are_retried() {
        let retried: Vec<_> = FailureReason::ALL
            .iter()
            .filter(|r| r.is_retryable())
            .collect();
        assert_eq!(
            retried,
            [
                &FailureReason::Throttled,
                &FailureReason::ServerError,
                &FailureReason::Transport
            ]
        );
    }
}
