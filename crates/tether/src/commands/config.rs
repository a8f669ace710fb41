//! Where the server URL and the token come from when no flag gives them.
//!
//! Order: the flag (or its `TETHER_URL` / `TETHER_TOKEN` variable, which clap folds in), then
//! the config file, then, for the token only, the `admin.token` file a single-machine server
//! writes into its data dir on first start: on one's own machine `tether submit` just works.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::exit::UsageError;

pub const DEFAULT_URL: &str = "http://127.0.0.1:4437";
const DEFAULT_DATA_DIR: &str = "./tether-data";
const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The config file: `url = "..."`, `token = "..."`.
#[derive(Debug, Default, Deserialize)]
pub struct ConfigFile {
    pub url: Option<String>,
    pub token: Option<String>,
}

/// What a command connects with.
#[derive(PartialEq, Eq)]
pub struct Resolved {
    pub url: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for Resolved {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// Reads the real environment; tests pass their own lookup instead.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

pub fn resolve(
    url: Option<String>,
    token: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Resolved> {
    // An empty setting (`TETHER_TOKEN= tether ...`) means "not set": fall through to the next.
    let given = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let file = load_config(env)?;
    let url = given(url)
        .or(given(file.url))
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let token = match given(token).or(given(file.token)) {
        Some(token) => Some(token),
        None => given(admin_token(env)?),
    };
    Ok(Resolved { url, token })
}

/// `$TETHER_CONFIG`, else `$XDG_CONFIG_HOME/tether/config.toml`, else
/// `~/.config/tether/config.toml`.
fn config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<(PathBuf, bool)> {
    if let Some(path) = env("TETHER_CONFIG") {
        return Some((PathBuf::from(path), true));
    }
    let dir = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some((dir.join("tether").join("config.toml"), false))
}

/// A missing default config file is normal; a missing file named by `$TETHER_CONFIG` is a
/// mistake worth saying, and so is a file that does not parse.
fn load_config(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<ConfigFile> {
    let Some((path, explicit)) = config_path(env) else {
        return Ok(ConfigFile::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(ConfigFile::default())
        }
        Err(e) => {
            return Err(UsageError(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ))
            .into())
        }
    };
    toml::from_str(&text)
        .map_err(|e| UsageError(format!("config file {}: {e}", path.display())).into())
}

/// The admin token the local server wrote, if there is one.
fn admin_token(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Option<String>> {
    let dir = env("TETHER_DATA_DIR").unwrap_or_else(|| DEFAULT_DATA_DIR.to_string());
    let path = Path::new(&dir).join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fixture {
        dir: tempfile::TempDir,
        vars: HashMap<&'static str, String>,
    }

    impl Fixture {
        /// A home directory with nothing in it, and `HOME` pointing at it.
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let mut vars = HashMap::new();
            vars.insert("HOME", dir.path().display().to_string());
            vars.insert(
                "TETHER_DATA_DIR",
                dir.path().join("data").display().to_string(),
            );
            Fixture { dir, vars }
        }

        fn write(&self, relative: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }

        fn resolve(&self, url: Option<&str>, token: Option<&str>) -> anyhow::Result<Resolved> {
            let vars = self.vars.clone();
            resolve(
                url.map(str::to_string),
                token.map(str::to_string),
                &move |key| vars.get(key).cloned(),
            )
        }
    }

    #[test]
    fn without_any_setting_the_default_url_and_no_token_are_used() {
        let fixture = Fixture::new();
        let resolved = fixture.resolve(None, None).unwrap();
        assert_eq!(resolved.url, DEFAULT_URL);
        assert_eq!(resolved.token, None);
    }

    #[test]
    fn the_home_config_file_fills_in_what_flags_leave_out() {
        let fixture = Fixture::new();
        fixture.write(
            ".config/tether/config.toml",
            "url = \"http://10.0.0.1:9\"\ntoken = \"from-file\"\n",
        );
        let resolved = fixture.resolve(None, None).unwrap();
        assert_eq!(resolved.url, "http://10.0.0.1:9");
        assert_eq!(resolved.token.as_deref(), Some("from-file"));
        let resolved = fixture
            .resolve(Some("http://flag:1"), Some("from-flag"))
            .unwrap();
        assert_eq!(resolved.url, "http://flag:1");
        assert_eq!(resolved.token.as_deref(), Some("from-flag"));
    }

    #[test]
    fn tether_config_wins_over_xdg_which_wins_over_home() {
        let mut fixture = Fixture::new();
        fixture.write(".config/tether/config.toml", "url = \"http://home:1\"\n");
        let xdg = fixture.write("xdg/tether/config.toml", "url = \"http://xdg:1\"\n");
        let xdg_dir = xdg
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .display()
            .to_string();
        fixture.vars.insert("XDG_CONFIG_HOME", xdg_dir);
        assert_eq!(fixture.resolve(None, None).unwrap().url, "http://xdg:1");
        let explicit = fixture.write("elsewhere.toml", "url = \"http://explicit:1\"\n");
        fixture
            .vars
            .insert("TETHER_CONFIG", explicit.display().to_string());
        assert_eq!(
            fixture.resolve(None, None).unwrap().url,
            "http://explicit:1"
        );
    }

    #[test]
    fn the_servers_admin_token_file_is_the_last_resort_for_the_token() {
        let fixture = Fixture::new();
        fixture.write("data/admin.token", "tk_admin\n");
        let resolved = fixture.resolve(None, None).unwrap();
        assert_eq!(resolved.token.as_deref(), Some("tk_admin"));
        let emptied = fixture.resolve(Some(""), Some(" ")).unwrap();
        assert_eq!(
            emptied.token.as_deref(),
            Some("tk_admin"),
            "empty means unset"
        );
        assert_eq!(emptied.url, DEFAULT_URL);
        fixture.write(".config/tether/config.toml", "token = \"tk_file\"\n");
        let resolved = fixture.resolve(None, None).unwrap();
        assert_eq!(resolved.token.as_deref(), Some("tk_file"));
    }

    #[test]
    fn a_missing_explicit_config_file_and_a_broken_one_are_errors() {
        let mut fixture = Fixture::new();
        fixture.vars.insert(
            "TETHER_CONFIG",
            fixture.dir.path().join("nope.toml").display().to_string(),
        );
        let error = fixture.resolve(None, None).unwrap_err();
        assert!(error.to_string().contains("nope.toml"), "{error}");

        let fixture = Fixture::new();
        fixture.write(".config/tether/config.toml", "url = [");
        let error = fixture.resolve(None, None).unwrap_err();
        assert!(error.to_string().contains("config.toml"), "{error}");
    }

    #[test]
    fn debug_output_of_the_resolved_settings_hides_the_token() {
        let resolved = Resolved {
            url: DEFAULT_URL.into(),
            token: Some("tk_secret".into()),
        };
        assert!(!format!("{resolved:?}").contains("tk_secret"));
    }
}
