//! Where the server URL and the token come from when no flag gives them.
//!
//! Order: the flag (or its `TETHER_URL` / `TETHER_TOKEN` variable, which clap folds in), then
//! the config file, then, for the token only, the `admin.token` file a single-machine server
//! writes into its data dir on first start, then the local server's record: the URL and admin
//! token that `tether up` / `tether serve` write to `local-server.toml` beside the config file,
//! so that the CLI on the server's machine finds them from any directory. The record's token
//! is only ever sent to the record's URL.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::exit::UsageError;

pub const DEFAULT_URL: &str = "http://127.0.0.1:4437";
use tether_server::config::DEFAULT_DATA_DIR;
const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Written by the local server, beside (never into) the user's own config file.
const LOCAL_SERVER_FILE: &str = "local-server.toml";

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
    /// Where the token came from, for the hint after a 401.
    pub token_source: Option<String>,
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
    // A broken record is the server's to rewrite, not the user's problem: ignored.
    let local = local_server_path(env)
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| toml::from_str::<ConfigFile>(&text).ok())
        .unwrap_or_default();
    let url = given(url)
        .or(given(file.url))
        .or(given(local.url.clone()))
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let (token, token_source) = if let Some(token) = given(token) {
        (Some(token), Some("--token / TETHER_TOKEN".to_string()))
    } else if let Some(token) = given(file.token) {
        (
            Some(token),
            config_path(env).map(|(p, _)| p.display().to_string()),
        )
    } else if let Some(token) = given(admin_token(env)?) {
        (
            Some(token),
            Some(admin_token_path(env).display().to_string()),
        )
    } else if let Some(token) = given(local.token).filter(|_| given(local.url) == Some(url.clone()))
    {
        (
            Some(token),
            local_server_path(env).map(|p| p.display().to_string()),
        )
    } else {
        (None, None)
    };
    Ok(Resolved {
        url,
        token,
        token_source,
    })
}

/// Every place a token may come from, in the order they are tried: what a 401 names.
pub fn token_places(env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut places = vec!["--token / TETHER_TOKEN".to_string()];
    if let Some((path, _)) = config_path(env) {
        places.push(format!("{} (token = ...)", path.display()));
    }
    places.push(admin_token_path(env).display().to_string());
    if let Some(path) = local_server_path(env) {
        places.push(format!("{} (written by tether up / serve)", path.display()));
    }
    places
}

/// `$XDG_CONFIG_HOME/tether`, else `~/.config/tether`.
fn config_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let dir = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(dir.join("tether"))
}

fn local_server_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    Some(config_dir(env)?.join(LOCAL_SERVER_FILE))
}

/// Called by `tether up` / `tether serve` once listening: records the server's URL and the
/// admin token from its data dir in `local-server.toml` (mode 0600), so the CLI finds them
/// from any directory of this machine. Skipped (`Ok(None)`) when the user configured a token
/// of their own in the config file, when there is no home to write to, or when the data dir
/// holds no admin token (a node of a shared database whose first admin is elsewhere). The
/// user's config file itself is never written.
pub fn record_local_server(
    url: &str,
    data_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<PathBuf>> {
    let Ok(file) = load_config(env) else {
        return Ok(None);
    };
    if file.token.is_some_and(|t| !t.trim().is_empty()) {
        return Ok(None);
    }
    let Some(path) = local_server_path(env) else {
        return Ok(None);
    };
    let token = match std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE)) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
        _ => return Ok(None),
    };
    let text = format!(
        "# Written by `tether up` / `tether serve` at each start: the local server and its\n\
         # admin token. Put your own settings in config.toml, which wins over this file.\n\
         url = {}\ntoken = {}\n",
        toml_string(url),
        toml_string(&token)
    );
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    tether_server::auth::write_private(&path, &text)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(path))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `$TETHER_CONFIG`, else `$XDG_CONFIG_HOME/tether/config.toml`, else
/// `~/.config/tether/config.toml`.
fn config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<(PathBuf, bool)> {
    if let Some(path) = env("TETHER_CONFIG") {
        return Some((PathBuf::from(path), true));
    }
    Some((config_dir(env)?.join("config.toml"), false))
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

fn admin_token_path(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let dir = env("TETHER_DATA_DIR").unwrap_or_else(|| DEFAULT_DATA_DIR.to_string());
    Path::new(&dir).join(ADMIN_TOKEN_FILE)
}

/// The admin token the local server wrote, if there is one.
fn admin_token(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Option<String>> {
    let path = admin_token_path(env);
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
    fn the_local_servers_record_is_found_from_any_directory_and_only_sent_to_its_url() {
        let mut fixture = Fixture::new();
        let server_dir = fixture.dir.path().join("server-data");
        std::fs::create_dir_all(&server_dir).unwrap();
        std::fs::write(server_dir.join("admin.token"), "tk_local\n").unwrap();
        let vars = fixture.vars.clone();
        let path = record_local_server("http://127.0.0.1:5001", &server_dir, &move |k| {
            vars.get(k).cloned()
        })
        .unwrap()
        .expect("recorded");
        assert_eq!(
            path,
            fixture.dir.path().join(".config/tether/local-server.toml")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The CLI elsewhere: no admin.token in its (default) data dir.
        fixture.vars.remove("TETHER_DATA_DIR");
        let resolved = fixture.resolve(None, None).unwrap();
        assert_eq!(resolved.url, "http://127.0.0.1:5001");
        assert_eq!(resolved.token.as_deref(), Some("tk_local"));
        assert_eq!(resolved.token_source, Some(path.display().to_string()));
        let elsewhere = fixture.resolve(Some("http://10.1.1.1:1"), None).unwrap();
        assert_eq!(
            elsewhere.token, None,
            "the admin token went to another server"
        );
    }

    #[test]
    fn a_token_in_the_users_config_file_means_nothing_is_recorded_and_the_file_is_kept() {
        let fixture = Fixture::new();
        let config = fixture.write(".config/tether/config.toml", "token = \"mine\"\n");
        let server_dir = fixture.dir.path().join("server-data");
        std::fs::create_dir_all(&server_dir).unwrap();
        std::fs::write(server_dir.join("admin.token"), "tk_local\n").unwrap();
        let vars = fixture.vars.clone();
        let recorded = record_local_server("http://127.0.0.1:5001", &server_dir, &move |k| {
            vars.get(k).cloned()
        })
        .unwrap();
        assert_eq!(recorded, None);
        assert_eq!(
            std::fs::read_to_string(config).unwrap(),
            "token = \"mine\"\n"
        );
        assert!(!fixture
            .dir
            .path()
            .join(".config/tether/local-server.toml")
            .exists());
    }

    #[test]
    fn debug_output_of_the_resolved_settings_hides_the_token() {
        let resolved = Resolved {
            url: DEFAULT_URL.into(),
            token: Some("tk_secret".into()),
            token_source: None,
        };
        assert!(!format!("{resolved:?}").contains("tk_secret"));
    }
}
