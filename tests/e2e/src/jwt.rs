//! Operator mode (decentralized JWT auth) for tests, without `nsc`: an operator with a system
//! account, accounts with JetStream, users and their credentials files, and the nats-server
//! configuration that trusts the operator and preloads the accounts into a memory resolver.
//!
//! A NATS JWT is `base64url(header) "." base64url(claims) "." base64url(signature)` (no
//! padding), the header `{"typ":"JWT","alg":"ed25519-nkey"}`, the signature ed25519 by the
//! issuer's nkey over `header.claims`. The claims name the issuer (`iss`) and the subject
//! (`sub`) by public key; the server checks the signature against `iss`, an account against the
//! trusted operator, a user against its account (`iss`) and the connecting client's nonce
//! signature against `sub`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use data_encoding::BASE64URL_NOPAD;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// Encodes `claims` as a JWT signed by `signer`. The claims' `iss` is left as given, so that a
/// test can sign with a key that is not the one the claims name.
pub fn encode(claims: &Value, signer: &KeyPair) -> String {
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{body}");
    let signature = signer
        .sign(signing_input.as_bytes())
        .expect("a key pair with its seed signs");
    format!("{signing_input}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// The claims of a JWT issued by `iss` about `sub`, with the type-specific `nats` object.
pub fn claims(iss: &str, sub: &str, name: &str, nats: Value) -> Value {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    json!({
        // Only needs to be unique; nsc uses a hash of the claims.
        "jti": format!("{sub}-{}", SERIAL.fetch_add(1, Ordering::Relaxed)),
        "iat": iat,
        "iss": iss,
        "sub": sub,
        "name": name,
        "nats": nats,
    })
}

/// The `nats` object of an account: no limit, JetStream enabled (unlimited storage).
fn account_nats() -> Value {
    json!({
        "type": "account",
        "version": 2,
        "limits": {
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
        },
    })
}

/// The `nats` object of a user with the given `pub`/`sub` permissions (`{"allow": […]}` each,
/// `{}` for everything) and no connection limits.
pub fn user_nats(publish: Value, subscribe: Value) -> Value {
    json!({
        "type": "user",
        "version": 2,
        "pub": publish,
        "sub": subscribe,
        "subs": -1, "data": -1, "payload": -1,
    })
}

/// A user JWT for `user`, issued and signed by `account`.
pub fn user_jwt(account: &KeyPair, user: &KeyPair, name: &str, nats: Value) -> String {
    encode(
        &claims(&account.public_key(), &user.public_key(), name, nats),
        account,
    )
}

/// The text of a credentials file (the format `nsc generate creds` writes): the user JWT and
/// the user's seed.
pub fn creds(user_jwt: &str, user: &KeyPair) -> String {
    let seed = user.seed().expect("a user key pair has its seed");
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// An operator, its system account, and the accounts it signed.
#[derive(Debug)]
pub struct Operator {
    key: KeyPair,
    system: KeyPair,
    /// Public key and JWT of each account, the system account first.
    accounts: Vec<(String, String)>,
}

impl Default for Operator {
    fn default() -> Self {
        Self::new()
    }
}

impl Operator {
    /// A new operator with a system account `SYS` (no JetStream).
    pub fn new() -> Self {
        let key = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let system_nats = json!({"type": "account", "version": 2, "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        }});
        let system_jwt = encode(
            &claims(&key.public_key(), &system.public_key(), "SYS", system_nats),
            &key,
        );
        Self {
            accounts: vec![(system.public_key(), system_jwt)],
            key,
            system,
        }
    }

    /// Signs a new account `name` with JetStream enabled; its key pair issues the users.
    pub fn account(&mut self, name: &str) -> KeyPair {
        let account = KeyPair::new_account();
        let jwt = encode(
            &claims(
                &self.key.public_key(),
                &account.public_key(),
                name,
                account_nats(),
            ),
            &self.key,
        );
        self.accounts.push((account.public_key(), jwt));
        account
    }

    /// The operator's self-signed JWT, naming the system account.
    pub fn jwt(&self) -> String {
        let pk = self.key.public_key();
        encode(
            &claims(
                &pk,
                &pk,
                "proxbalance-test",
                json!({
                    "type": "operator",
                    "version": 2,
                    "system_account": self.system.public_key(),
                }),
            ),
            &self.key,
        )
    }

    /// Writes `operator.jwt` and `nats-server.conf` into `dir`: trusts this operator, memory
    /// resolver preloaded with every account so far, JetStream stored under `dir`, debug
    /// logging (the log says why a login is refused). Returns the configuration file (for
    /// [`crate::NatsServer::start_with_config`], which sets the port).
    pub fn write_server_config(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let operator_file = dir.join("operator.jwt");
        std::fs::write(&operator_file, self.jwt())?;
        let preload = self
            .accounts
            .iter()
            .map(|(pk, jwt)| format!("  {pk}: \"{jwt}\"\n"))
            .collect::<String>();
        let conf = dir.join("nats-server.conf");
        std::fs::write(
            &conf,
            format!(
                "operator: {:?}\nsystem_account: {}\nresolver: MEMORY\n\
                 resolver_preload: {{\n{preload}}}\n\
                 jetstream {{ store_dir: {:?} }}\ndebug: true\n",
                operator_file.display().to_string(),
                self.system.public_key(),
                dir.join("jetstream").display().to_string(),
            ),
        )?;
        Ok(conf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_is_signed_by_its_signer_over_header_and_claims() {
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let token = user_jwt(&account, &user, "u", user_nats(json!({}), json!({})));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&BASE64URL_NOPAD.decode(parts[0].as_bytes()).unwrap()).unwrap();
        assert_eq!(header, json!({"typ": "JWT", "alg": "ed25519-nkey"}));
        let claims: Value =
            serde_json::from_slice(&BASE64URL_NOPAD.decode(parts[1].as_bytes()).unwrap()).unwrap();
        assert_eq!(claims["iss"], account.public_key());
        assert_eq!(claims["sub"], user.public_key());
        assert_eq!(claims["nats"]["type"], "user");
        let signature = BASE64URL_NOPAD.decode(parts[2].as_bytes()).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        account.verify(signed.as_bytes(), &signature).unwrap();
        assert!(user.verify(signed.as_bytes(), &signature).is_err());

        let text = creds(&token, &user);
        assert!(text.contains(&format!("\n{token}\n")));
        assert!(text.contains(&format!("\n{}\n", user.seed().unwrap())));
    }
}
