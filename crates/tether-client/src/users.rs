//! Users and tokens (admin), and who the caller is.

use reqwest::Method;
use tether_types::api::{IssuedToken, NewToken, NewUser, User, WhoAmI};
use tether_types::Role;

use crate::{Client, Error};

impl Client {
    pub async fn create_user(&self, name: &str) -> Result<User, Error> {
        let body = NewUser {
            name: name.to_string(),
        };
        self.call(self.request(Method::POST, "/v1/users").json(&body))
            .await
    }

    /// Issues a token; the answer is the only time its secret is shown.
    pub async fn create_token(&self, user: &str, role: Role) -> Result<IssuedToken, Error> {
        let body = NewToken {
            user: user.to_string(),
            role,
        };
        self.call(self.request(Method::POST, "/v1/tokens").json(&body))
            .await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<(), Error> {
        let path = format!("/v1/tokens/{}", encode_segment(id));
        self.send(
            self.request(Method::DELETE, &path)
                .timeout(crate::client::CALL_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    pub async fn whoami(&self) -> Result<WhoAmI, Error> {
        self.call(self.request(Method::GET, "/v1/whoami")).await
    }
}

/// Percent-encodes everything but unreserved characters, so an id typed by a person cannot
/// change the path.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_cannot_escape_their_place() {
        assert_eq!(super::encode_segment("tok_1"), "tok_1");
        assert_eq!(super::encode_segment("../x?y"), "..%2Fx%3Fy");
    }
}
