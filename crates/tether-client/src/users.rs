//! Users and tokens (admin), and who the caller is.

use reqwest::Method;
use tether_types::api::{
    IssuedToken, LoginCode, NewToken, NewUser, TokenList, User, UserList, WhoAmI,
};
use tether_types::Role;

use crate::client::encode_segment;
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

    /// Every user (admin).
    pub async fn list_users(&self) -> Result<UserList, Error> {
        self.call(self.request(Method::GET, "/v1/users")).await
    }

    /// Live tokens: everyone's for an admin, the caller's own otherwise. Never secrets.
    pub async fn list_tokens(&self) -> Result<TokenList, Error> {
        self.call(self.request(Method::GET, "/v1/tokens")).await
    }

    pub async fn whoami(&self) -> Result<WhoAmI, Error> {
        self.call(self.request(Method::GET, "/v1/whoami")).await
    }

    /// A one-time login code (and link) that signs a browser in as this client's token.
    pub async fn login_code(&self) -> Result<LoginCode, Error> {
        let body = serde_json::json!({});
        self.call(self.request(Method::POST, "/v1/login-codes").json(&body))
            .await
    }
}
