//! A blocking client of the control plane's admin API (`edgeprice_schemas::admin`),
//! used only from the poller thread.

use std::time::Duration;

use edgeprice_schemas::admin::{
    AlertRow, Approval, ApprovalRequest, AuditRow, KillSwitchOutcome, KillSwitchRequest,
    KillSwitches, Metrics, Override, OverrideRequest, PromotionRow, SkuDetail, SkuPage, WhoAmI,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a call failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The control plane could not be reached or the connection broke: retry.
    #[error("cannot reach the control plane: {0}")]
    Transport(String),
    /// The control plane answered with an error (`{"error":{"code","message"}}`).
    #[error("{status} {code}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// The answer was not what the contract says.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

impl ApiError {
    /// Whether the failure means the control plane is unreachable (the console
    /// reconnects) rather than that it refused this one call.
    pub fn is_transport(&self) -> bool {
        matches!(self, ApiError::Transport(_))
    }

    /// `401`: the token is not known.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ApiError::Status { status: 401, .. })
    }
}

/// `GET /v1/admin/skus` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuQuery {
    /// Filter text (SKU id or category), empty for all.
    pub q: String,
    /// One of `edgeprice_schemas::admin::SKU_SORTS`.
    pub sort: String,
    pub desc: bool,
    pub offset: u64,
    pub limit: u64,
}

impl Default for SkuQuery {
    fn default() -> SkuQuery {
        SkuQuery {
            q: String::new(),
            sort: "sku".to_owned(),
            desc: false,
            offset: 0,
            limit: 100,
        }
    }
}

/// How long a mutation may take: the control plane applies it on its pipeline thread,
/// which can be busy for many seconds (a demo's initial catalog).
pub const MUTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The admin API at one base URL with one bearer token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    authorization: String,
    agent: ureq::Agent,
}

/// A mutation that got no answer may still have been applied: say so rather than
/// claim it failed.
fn unanswered(error: ApiError) -> ApiError {
    match error {
        ApiError::Transport(cause) => ApiError::Transport(format!(
            "{cause}; no answer, so it may still take effect: the panels show the server's state"
        )),
        other => other,
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

impl AdminClient {
    /// `base` is the control plane's URL (`http://127.0.0.1:8081`).
    pub fn new(base: &str, token: &str, timeout: Duration) -> AdminClient {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        AdminClient {
            base: base.trim_end_matches('/').to_owned(),
            authorization: format!("Bearer {token}"),
            agent,
        }
    }

    pub fn whoami(&self) -> Result<WhoAmI, ApiError> {
        self.get("/v1/admin/whoami", &[])
    }

    pub fn metrics(&self) -> Result<Metrics, ApiError> {
        self.get("/v1/admin/metrics", &[])
    }

    pub fn alerts(&self, limit: u32) -> Result<Vec<AlertRow>, ApiError> {
        self.get("/v1/admin/alerts", &[("limit", limit.to_string())])
    }

    pub fn kill_switches(&self) -> Result<KillSwitches, ApiError> {
        self.get("/v1/admin/kill-switches", &[])
    }

    pub fn promotions(&self) -> Result<Vec<PromotionRow>, ApiError> {
        self.get("/v1/admin/promotions", &[])
    }

    pub fn overrides(&self) -> Result<Vec<Override>, ApiError> {
        self.get("/v1/admin/overrides", &[])
    }

    pub fn audit(&self, limit: u32) -> Result<Vec<AuditRow>, ApiError> {
        self.get("/v1/admin/audit", &[("limit", limit.to_string())])
    }

    pub fn approvals(&self) -> Result<Vec<Approval>, ApiError> {
        self.get("/v1/admin/approvals", &[])
    }

    /// Approves or rejects a pending suggestion; answers the decision record.
    pub fn decide(
        &self,
        sku: &str,
        request: &ApprovalRequest,
    ) -> Result<serde_json::Value, ApiError> {
        self.post(
            &format!("/v1/admin/approvals/{}", path_segment(sku)),
            request,
        )
    }

    pub fn skus(&self, query: &SkuQuery) -> Result<SkuPage, ApiError> {
        let mut params = vec![
            ("sort", query.sort.clone()),
            ("desc", query.desc.to_string()),
            ("limit", query.limit.to_string()),
            ("offset", query.offset.to_string()),
        ];
        if !query.q.is_empty() {
            params.push(("q", query.q.clone()));
        }
        self.get("/v1/admin/skus", &params)
    }

    pub fn sku(&self, sku: &str) -> Result<SkuDetail, ApiError> {
        self.get(&format!("/v1/admin/skus/{}", path_segment(sku)), &[])
    }

    pub fn kill_switch(&self, request: &KillSwitchRequest) -> Result<KillSwitchOutcome, ApiError> {
        self.post("/v1/admin/kill-switches", request)
            .map_err(unanswered)
    }

    pub fn create_override(&self, request: &OverrideRequest) -> Result<Override, ApiError> {
        self.post("/v1/admin/overrides", request)
            .map_err(unanswered)
    }

    pub fn remove_override(&self, id: u64, reason: &str) -> Result<Override, ApiError> {
        let url = format!("{}/v1/admin/overrides/{id}", self.base);
        let response = self
            .agent
            .delete(&url)
            .config()
            .timeout_global(Some(MUTATION_TIMEOUT))
            .build()
            .header("Authorization", &self.authorization)
            .query("reason", reason)
            .call();
        answer(response).map_err(unanswered)
    }

    fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<T, ApiError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .agent
            .get(&url)
            .header("Authorization", &self.authorization);
        for (name, value) in params {
            request = request.query(*name, value);
        }
        answer(request.call())
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ApiError> {
        let url = format!("{}{path}", self.base);
        let body = serde_json::to_vec(body).map_err(|e| ApiError::Decode(e.to_string()))?;
        let response = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(MUTATION_TIMEOUT))
            .build()
            .header("Authorization", &self.authorization)
            .header("Content-Type", "application/json")
            .send(&body[..]);
        answer(response)
    }
}

fn answer<T: DeserializeOwned>(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<T, ApiError> {
    let mut response = response.map_err(|e| ApiError::Transport(e.to_string()))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| ApiError::Transport(e.to_string()))?;
    if (200..300).contains(&status) {
        return serde_json::from_str(&text).map_err(|e| ApiError::Decode(e.to_string()));
    }
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ApiError::Status {
            status,
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => ApiError::Status {
            status,
            code: "http_error".to_owned(),
            message: text.chars().take(200).collect(),
        },
    })
}

/// Percent-encodes one path segment (SKU ids are free text in feeds).
fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("SKU-0000042"), "SKU-0000042");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
