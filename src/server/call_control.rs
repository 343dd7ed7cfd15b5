//! [`VonageCallControl`]: the [`CallControl`] the server uses when it has Vonage REST
//! credentials (`--application-id` and `--private-key`). It turns an agent's
//! [`AgentAction`] into a Voice REST request on the caller's leg:
//!
//! | action | request |
//! | --- | --- |
//! | [`AgentAction::Hangup`] | `PUT /v1/calls/{uuid}` `{"action":"hangup"}` |
//! | [`AgentAction::Transfer`] | `PUT /v1/calls/{uuid}` transfer to an inline NCCO: an optional hold message, then `connect` to the number (§7.2, vector §10.29) |
//!
//! Requests go to the call's `region_url` from its answer webhook when the server saw one (the
//! call lives only there), else to `--api-url`. The call registry holds that URL, so the control
//! is [`bind`](VonageCallControl::bind)ed to the [`AppState`] after both are built (it keeps a
//! weak reference: the state owns the control, not the other way round).
//!
//! Also here: building the REST client from the server configuration
//! ([`client_from_config`]) and the body of an outbound call to this server
//! ([`outbound_call`], for `voicegate call`).
//!
//! Not real-time: actions run on the agent's task and await the network.

use std::sync::{Arc, OnceLock};

use super::auth::unix_now;
use super::config::ServerConfig;
use super::media_token::{MediaCall, MediaTokens};
use super::state::{AppState, WeakAppState};
use crate::agent::{ActionError, AgentAction, BoxFuture, CallControl, CallId};
use crate::vonage::app_jwt::{AppJwt, AppJwtError};
use crate::vonage::client::{ClientError, CreateCall, VoiceClient, normalize_number};
use crate::vonage::ncco::{Action, Connect, Endpoint, EventType, HttpMethod, Ncco, Talk};

/// What callers hear before a transfer connects, unless changed with
/// [`VonageCallControl::with_hold_message`].
pub const HOLD_MESSAGE: &str = "Please hold while I transfer you.";

/// Performs agent actions through the Vonage Voice REST API.
#[derive(Debug)]
pub struct VonageCallControl {
    client: VoiceClient,
    state: OnceLock<WeakAppState>,
    hold_message: Option<String>,
}

impl VonageCallControl {
    /// Call control through `client` (whose base URL is the default for calls of unknown
    /// region). Call [`bind`](Self::bind) once the [`AppState`] exists.
    pub fn new(client: VoiceClient) -> Self {
        Self {
            client,
            state: OnceLock::new(),
            hold_message: Some(HOLD_MESSAGE.to_owned()),
        }
    }

    /// What a transferred caller hears before the number rings (`None`: nothing).
    pub fn with_hold_message(mut self, text: Option<String>) -> Self {
        self.hold_message = text.filter(|t| !t.trim().is_empty());
        self
    }

    /// Lets the control read per-call facts (`region_url`, the number that was called) from
    /// `state`'s registry of live sockets (the media token carried them). Only the first call has an effect.
    pub fn bind(&self, state: &AppState) {
        let _ = self.state.set(state.downgrade());
    }

    /// The REST client.
    pub fn client(&self) -> &VoiceClient {
        &self.client
    }

    async fn run(&self, call: &CallId, action: &AgentAction) -> Result<(), ActionError> {
        let entry = self
            .state
            .get()
            .and_then(WeakAppState::upgrade)
            .and_then(|st| st.call(call));
        let region = entry.as_ref().and_then(|e| e.region_url.as_deref());
        let client = match self.client.region(region) {
            Ok(c) => c,
            Err(e) => {
                // Never send our JWT to a host we do not trust; the default host generally
                // routes control of calls in any region (§6).
                tracing::warn!(call_id = %call, error = %e, "ignoring the call's region_url; using the default API URL");
                self.client.clone()
            }
        };
        let result = match action {
            AgentAction::Hangup => client.hangup(call.as_str()).await,
            AgentAction::Transfer { to } => {
                let to = normalize_number(to)
                    .map_err(|_| ActionError::InvalidNumber { to: to.clone() })?;
                // Vonage wants a caller id on `connect` to a phone: the number that was called.
                let from = entry
                    .as_ref()
                    .and_then(|e| e.to.as_deref())
                    .and_then(|n| normalize_number(n).ok());
                let ncco = transfer_ncco(&to, from.as_deref(), self.hold_message.as_deref());
                client.transfer_ncco(call.as_str(), ncco).await
            }
        };
        match result {
            Ok(()) => {
                tracing::info!(call_id = %call, %action, api = client.base_url(), "call control done");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(call_id = %call, %action, api = client.base_url(), status = e.status().unwrap_or(0), instance = e.problem().and_then(|p| p.instance.as_deref()).unwrap_or("-"), error = %e, "call control failed");
                let reason = if e.is_call_gone() {
                    format!("the call is gone (404): {e}")
                } else {
                    e.to_string()
                };
                Err(ActionError::Failed {
                    action: action.clone(),
                    reason,
                })
            }
        }
    }
}

impl CallControl for VonageCallControl {
    fn perform<'a>(
        &'a self,
        call: &'a CallId,
        action: AgentAction,
    ) -> BoxFuture<'a, Result<(), ActionError>> {
        Box::pin(async move { self.run(call, &action).await })
    }
}

/// The NCCO a transferred leg runs: `hold` spoken (if any), then `connect` to the phone number
/// `to` with caller id `from` (E.164 digits).
pub fn transfer_ncco(to: &str, from: Option<&str>, hold: Option<&str>) -> Ncco {
    let mut actions = Vec::with_capacity(2);
    if let Some(h) = hold {
        actions.push(Talk::new(h).into());
    }
    let mut connect = Connect::new(Endpoint::phone(to));
    if let Some(f) = from {
        connect = connect.from(f);
    }
    actions.push(connect.into());
    Ncco(actions)
}

/// Why the REST client could not be set up from the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestConfigError {
    /// Only one of `--application-id` and `--private-key` was given.
    #[error(
        "the Vonage REST API needs both --application-id (VONAGE_APPLICATION_ID) and \
         --private-key (VONAGE_PRIVATE_KEY_PATH); only {given} was given"
    )]
    Incomplete {
        /// The one that was given.
        given: &'static str,
    },
    /// Neither was given, and the command needs them.
    #[error(
        "this needs the Vonage REST API: set --application-id (VONAGE_APPLICATION_ID) and \
         --private-key (VONAGE_PRIVATE_KEY_PATH)"
    )]
    Missing,
    /// The key could not be loaded.
    #[error(transparent)]
    Jwt(#[from] AppJwtError),
    /// The client could not be built (a bad `--api-url`, say), or a number is invalid.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `voicegate call` needs to tell Vonage where this server is.
    #[error("--public-url (VOICEGATE_PUBLIC_URL) is required: Vonage must reach this server")]
    NoPublicUrl,
    /// `--inline-ncco` puts a media token in the NCCO, which the running server must accept:
    /// both need the same key.
    #[error(
        "--inline-ncco needs --media-token-key (VOICEGATE_MEDIA_TOKEN_KEY), the same as the running \
         server's: the NCCO carries a media token the server must accept"
    )]
    InlineNeedsMediaTokenKey,
    /// The outbound call's id is not a valid call id (cannot happen with a uuid; kept typed).
    #[error(transparent)]
    CallId(#[from] crate::agent::InvalidCallId),
}

/// The REST client configured by `--application-id`, `--private-key` and `--api-url`; `None`
/// when neither credential is given.
pub fn client_from_config(config: &ServerConfig) -> Result<Option<VoiceClient>, RestConfigError> {
    let (id, key) = match (&config.application_id, &config.private_key) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(RestConfigError::Incomplete {
                given: "--application-id",
            });
        }
        (None, Some(_)) => {
            return Err(RestConfigError::Incomplete {
                given: "--private-key",
            });
        }
        (Some(id), Some(key)) => (id, key),
    };
    let jwt = AppJwt::from_pem_file(id.clone(), key)?;
    let client = VoiceClient::builder(Arc::new(jwt))
        .api_url(config.api_url.clone())
        .build()?;
    Ok(Some(client))
}

/// The call control for `config`: [`VonageCallControl`] when REST credentials are configured.
/// Bind it to the state with [`VonageCallControl::bind`].
pub fn control_from_config(
    config: &ServerConfig,
) -> Result<Option<Arc<VonageCallControl>>, RestConfigError> {
    Ok(client_from_config(config)?.map(|c| Arc::new(VonageCallControl::new(c))))
}

/// How `voicegate call` gives the new call its NCCO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutboundNcco {
    /// `answer_url` = our `/answer`: the server builds the NCCO when the callee answers, as for
    /// an inbound call (greeting, socket, region tracking). The server must be running.
    #[default]
    AnswerUrl,
    /// An inline NCCO that connects straight to our media socket.
    Inline,
}

/// The `POST /v1/calls` body for an outbound call from this server to `to` (any format a
/// person types; normalised to digits), with caller id `from` (a Vonage number of the account;
/// `None` = a random one). Status events go to our `/events`.
pub fn outbound_call(
    config: &ServerConfig,
    to: &str,
    from: Option<&str>,
    mode: OutboundNcco,
) -> Result<CreateCall, RestConfigError> {
    let base = config
        .public_url
        .as_deref()
        .ok_or(RestConfigError::NoPublicUrl)?;
    let to = normalize_number(to)?;
    let call = match mode {
        OutboundNcco::AnswerUrl => {
            let mut c =
                CreateCall::with_answer_url(Endpoint::phone(to.clone()), format!("{base}/answer"));
            if let crate::vonage::client::CallAnswer::Url { answer_method, .. } = &mut c.answer {
                *answer_method = Some(HttpMethod::Post);
            }
            c
        }
        OutboundNcco::Inline => {
            // The socket is accepted only with a media token, as for a call answered by
            // /answer; the running server checks it with its own key, so this one must match.
            let key = config
                .media_token_key
                .as_ref()
                .ok_or(RestConfigError::InlineNeedsMediaTokenKey)?;
            let id = format!("out-{}", uuid::Uuid::new_v4());
            let call_id = CallId::parse(&id)?;
            let mut media = MediaCall::new(call_id, config.rate);
            media.to = Some(to.clone());
            media
                .extra_headers
                .insert("direction".into(), "outbound".into());
            let (token, _) =
                MediaTokens::new(key.0.as_bytes(), config.media_token_ttl).mint(&media, unix_now());
            let endpoint = super::routes::websocket_endpoint(
                &super::routes::ws_base(base),
                &media,
                &token,
                config.signed_media_socket,
            );
            let connect = Connect::new(Endpoint::Websocket(endpoint))
                .event_type(EventType::Synchronous)
                .event_url(format!("{base}/events"));
            let mut actions: Vec<Action> = Vec::with_capacity(2);
            if let Some(g) = &config.greeting {
                let mut talk = Talk::new(g.text.clone());
                talk.language = g.language.clone();
                talk.style = g.style;
                actions.push(talk.into());
            }
            actions.push(connect.into());
            CreateCall::with_ncco(Endpoint::phone(to.clone()), Ncco(actions))
        }
    };
    let mut call = match from {
        Some(f) => call.from_number(normalize_number(f)?),
        None => call.random_from_number(),
    };
    call.event_url = Some([format!("{base}/events")]);
    call.event_method = Some(HttpMethod::Post);
    call.validate()?;
    Ok(call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_ncco_matches_the_documented_vector() {
        let v = serde_json::to_value(transfer_ncco(
            "447700900999",
            Some("447700900000"),
            Some(HOLD_MESSAGE),
        ))
        .unwrap();
        let vector: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/data/vectors/29-rest-transfer.json"
        ))
        .unwrap();
        assert_eq!(v, vector["content"]["destination"]["ncco"]);
    }

    #[test]
    fn outbound_calls_point_at_this_server() {
        let mut cfg = ServerConfig::new();
        assert!(matches!(
            outbound_call(&cfg, "+14155550123", None, OutboundNcco::AnswerUrl),
            Err(RestConfigError::NoPublicUrl)
        ));
        cfg.public_url = Some("https://gateway.example.com".into());
        let c = outbound_call(
            &cfg,
            "+1 415 555 0123",
            Some("+447700900000"),
            OutboundNcco::AnswerUrl,
        )
        .unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["to"],
            serde_json::json!([{"type":"phone","number":"14155550123"}])
        );
        assert_eq!(
            v["from"],
            serde_json::json!({"type":"phone","number":"447700900000"})
        );
        assert_eq!(v["answer_url"][0], "https://gateway.example.com/answer");
        assert_eq!(v["answer_method"], "POST");
        assert_eq!(v["event_url"][0], "https://gateway.example.com/events");
        cfg.media_token_key = Some(super::super::config::MediaTokenKeyConfig(
            "0123456789abcdef".into(),
        ));
        let c = outbound_call(&cfg, "14155550123", None, OutboundNcco::Inline).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["random_from_number"], true);
        let ep = &v["ncco"][0]["endpoint"][0];
        assert_eq!(ep["type"], "websocket");
        assert!(
            ep["uri"]
                .as_str()
                .unwrap()
                .starts_with("wss://gateway.example.com/voice-stream/out-")
        );
        assert_eq!(ep["content-type"], "audio/l16;rate=16000");
        assert!(outbound_call(&cfg, "12", None, OutboundNcco::Inline).is_err());
    }

    #[test]
    fn an_inline_ncco_carries_a_media_token_the_server_accepts() {
        let mut cfg = ServerConfig::new();
        cfg.public_url = Some("https://gateway.example.com".into());
        assert!(matches!(
            outbound_call(&cfg, "14155550123", None, OutboundNcco::Inline),
            Err(RestConfigError::InlineNeedsMediaTokenKey)
        ));
        cfg.media_token_key = Some(super::super::config::MediaTokenKeyConfig(
            "0123456789abcdef".into(),
        ));
        let c = outbound_call(&cfg, "14155550123", None, OutboundNcco::Inline).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        let ep = &v["ncco"][0]["endpoint"][0];
        let uri = ep["uri"].as_str().unwrap();
        let token = crate::server::media_token::token_in_uri(uri).expect("a token in the uri");
        // What the running server holds: the same key, its own instance.
        let server = MediaTokens::new(b"0123456789abcdef", cfg.media_token_ttl);
        let claims = server.open(token).expect("the server accepts the token");
        let id = uri
            .split("/voice-stream/")
            .nth(1)
            .and_then(|r| r.split('?').next())
            .unwrap();
        assert_eq!(claims.call.call_id.as_str(), id);
        assert_eq!(claims.call.to.as_deref(), Some("14155550123"));
        assert_eq!(ep["headers"]["direction"], "outbound");
        assert_eq!(ep["headers"]["call_uuid"], id);
        // Another key does not.
        assert!(
            MediaTokens::new(b"another key, 16+ bytes", cfg.media_token_ttl)
                .open(token)
                .is_err()
        );
    }
}
