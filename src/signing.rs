//! TC3-HMAC-SHA256, the request signature of Tencent Cloud API 3.0.
//!
//! The signature covers the method, the path, the `content-type` and `host`
//! headers and the SHA-256 of the exact body bytes. The date in the
//! credential scope is the UTC date of the timestamp: a local date would
//! break every request between midnight and 08:00 in Beijing.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The one algorithm this module implements.
const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// The headers every signature covers, in canonical order.
const SIGNED_HEADERS: &str = "content-type;host";

/// What goes into one signature.
#[derive(Debug, Clone, Copy)]
pub struct SigningInput<'a> {
    pub secret_id: &'a str,
    pub secret_key: &'a str,
    /// The service, such as `redis`.
    pub service: &'a str,
    /// The `Host` header as sent: host, and `:port` when not the default.
    pub host: &'a str,
    /// Unix seconds; the same value goes into `X-TC-Timestamp`.
    pub timestamp: i64,
    /// The `Content-Type` header, byte for byte as sent.
    pub content_type: &'a str,
    /// The exact body bytes sent.
    pub body: &'a [u8],
}

/// The signature and the intermediate values, for tests and debugging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub body_hash: String,
    pub canonical_request_hash: String,
    pub signature: String,
    /// The value of the `Authorization` header.
    pub authorization: String,
}

/// Signs a `POST /` request.
pub fn sign(input: &SigningInput<'_>) -> Signature {
    let body_hash = sha256_hex(input.body);
    let canonical_request = format!(
        "POST\n/\n\ncontent-type:{}\nhost:{}\n\n{SIGNED_HEADERS}\n{body_hash}",
        input.content_type, input.host
    );
    let canonical_request_hash = sha256_hex(canonical_request.as_bytes());

    let date = utc_date(input.timestamp);
    let scope = format!("{date}/{}/tc3_request", input.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{canonical_request_hash}",
        input.timestamp
    );

    let k_date = hmac_sha256(
        format!("TC3{}", input.secret_key).as_bytes(),
        date.as_bytes(),
    );
    let k_service = hmac_sha256(&k_date, input.service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"tc3_request");
    let signature = hex::encode(hmac_sha256(&k_signing, string_to_sign.as_bytes()));

    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={SIGNED_HEADERS}, Signature={signature}",
        input.secret_id
    );
    Signature {
        body_hash,
        canonical_request_hash,
        signature,
        authorization,
    }
}

/// The UTC calendar date of a Unix timestamp, as `YYYY-MM-DD`.
pub fn utc_date(timestamp: i64) -> String {
    // Timestamps outside the supported range only come from a broken clock;
    // the epoch date then produces a signature the server rejects clearly.
    let moment =
        OffsetDateTime::from_unix_timestamp(timestamp).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let date = moment.date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector<'a>(
        id: &'a str,
        key: &'a str,
        service: &'a str,
        host: &'a str,
        timestamp: i64,
        content_type: &'a str,
        body: &'a str,
    ) -> Signature {
        sign(&SigningInput {
            secret_id: id,
            secret_key: key,
            service,
            host,
            timestamp,
            content_type,
            body: body.as_bytes(),
        })
    }

    #[test]
    fn published_example_of_the_official_documentation() {
        let sig = vector(
            "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            "cvm",
            "cvm.tencentcloudapi.com",
            1551113065,
            "application/json; charset=utf-8",
            concat!(
                r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "#,
                r#""Name": "instance-name"}]}"#
            ),
        );
        assert_eq!(
            sig.body_hash,
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        assert_eq!(
            sig.canonical_request_hash,
            "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            sig.signature,
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    #[test]
    fn redis_request_on_the_global_host() {
        let sig = vector(
            "AKIDEXAMPLE",
            "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            "redis",
            "redis.tencentcloudapi.com",
            1700000000,
            "application/json",
            r#"{"InstanceId":"crs-ei43p3gr","Limit":100,"Offset":0}"#,
        );
        assert_eq!(
            sig.body_hash,
            "1dd37dc317ad63038c3a72694880de8cab11f3545271fd5dda82308c20a6c14c"
        );
        assert_eq!(
            sig.canonical_request_hash,
            "77cb0d179e98ad323613daf84428c1ca07a2908dc7f901ccbef4a2efdd378cb0"
        );
        assert_eq!(
            sig.signature,
            "51898e4400a1bc07beeb5a9f81d970312eb123aededdd6a3dae7d763ebc3fd43"
        );
        assert_eq!(
            sig.authorization,
            "TC3-HMAC-SHA256 Credential=AKIDEXAMPLE/2023-11-14/redis/tc3_request, \
             SignedHeaders=content-type;host, \
             Signature=51898e4400a1bc07beeb5a9f81d970312eb123aededdd6a3dae7d763ebc3fd43"
        );
    }

    #[test]
    fn financial_region_just_after_midnight_in_beijing_signs_with_the_utc_date() {
        let sig = vector(
            "AKIDTESTKEY0001",
            "tEsTsEcReTkEy0000000000000000001",
            "redis",
            "redis.ap-shanghai-fsi.tencentcloudapi.com",
            1780248600,
            "application/json",
            r#"{"InstanceId":"crs-fsi00001","Limit":100,"Offset":200,"Status":[1,2,3,4,-1,-2]}"#,
        );
        assert_eq!(
            sig.body_hash,
            "085599ca55364e104bd8c0305191c88114c0c85b4b2e48a211db7bd90f9734c8"
        );
        assert_eq!(
            sig.canonical_request_hash,
            "a976fa31b9712c1650bddf8b8b589876579c48ecd79b15542dd2abb0ed53ee0a"
        );
        assert_eq!(
            sig.signature,
            "c01cdf3a662b97ef14a3a7b3f7979c6d26eda9e0d2edc2b399d0e3e99ef80ba7"
        );
        assert!(sig.authorization.contains("/2026-05-31/redis/tc3_request"));
    }
}
