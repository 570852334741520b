//! The parts of an image's configuration a sandbox honours (`Env`,
//! `WorkingDir`, `User`, `Entrypoint`, `Cmd`), and `User` resolved to
//! numbers from the image's own `/etc/passwd` and `/etc/group`.

use serde::{Deserialize, Serialize};

/// The image config JSON, as far as we read it.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
}

/// What a sandbox takes from an image's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Env`, in order.
    pub env: Vec<(String, String)>,
    /// `WorkingDir`, when set.
    pub working_dir: Option<String>,
    /// `User` as written (`app`, `1234:5678`), when set.
    pub user: Option<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
}

impl ImageConfig {
    /// Parses the config blob; refuses images for another platform.
    pub fn parse(json: &str) -> Result<ImageConfig, String> {
        let file: ConfigFile = serde_json::from_str(json)
            .map_err(|e| format!("the image config is not valid: {e}"))?;
        if let (Some(os), Some(arch)) = (&file.os, &file.architecture) {
            if os != "linux" || arch != "amd64" {
                return Err(format!(
                    "the image is for {os}/{arch}; sandboxes run linux/amd64"
                ));
            }
        }
        let run = file.config.unwrap_or_default();
        Ok(ImageConfig {
            env: run
                .env
                .unwrap_or_default()
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            working_dir: run.working_dir.filter(|d| d.starts_with('/')),
            user: run.user.filter(|u| !u.is_empty()),
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
        })
    }

    /// The command `Entrypoint` + `Cmd` make, when they make one.
    pub fn command(&self) -> Option<Vec<String>> {
        let argv: Vec<String> = self.entrypoint.iter().chain(&self.cmd).cloned().collect();
        (!argv.is_empty()).then_some(argv)
    }
}

/// A user resolved to numbers, with what `/etc/passwd` says of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (`/etc/group` membership).
    pub groups: Vec<u32>,
    /// Its name, when `/etc/passwd` has one.
    pub name: Option<String>,
    /// Its home directory, when `/etc/passwd` has one.
    pub home: Option<String>,
}

/// Resolves `user[:group]` (names or numbers) against the image's
/// `/etc/passwd` and `/etc/group` (their contents; empty when missing). A
/// number needs no entry; a name does.
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser, String> {
    let (user, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd_entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && (f[0] == user || f[2] == user)).then(|| {
            (
                f[0].to_string(),
                f[2].parse::<u32>().ok(),
                f[3].parse::<u32>().ok(),
                f[5].to_string(),
            )
        })
    });
    // `root` is uid 0 whether or not the image has an /etc/passwd.
    let passwd_entry = passwd_entry.or_else(|| {
        (user == "root").then(|| ("root".to_string(), Some(0), Some(0), "/root".to_string()))
    });
    let uid = match (user.parse::<u32>(), &passwd_entry) {
        (Ok(n), _) => n,
        (Err(_), Some((_, Some(uid), _, _))) => *uid,
        _ => return Err(format!("user `{user}` is not in the image's /etc/passwd")),
    };
    let groups_of = |line: &str| -> Option<(String, u32, Vec<String>)> {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let members = f[3]
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect();
        Some((f[0].to_string(), f[2].parse::<u32>().ok()?, members))
    };
    let gid = match group_part {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .filter_map(groups_of)
                .find(|(name, _, _)| name == g)
                .map(|(_, gid, _)| gid)
                .ok_or_else(|| format!("group `{g}` is not in the image's /etc/group"))?,
        },
        None => passwd_entry.as_ref().and_then(|e| e.2).unwrap_or(uid),
    };
    let name = passwd_entry.as_ref().map(|e| e.0.clone());
    let groups = match &name {
        Some(name) => group
            .lines()
            .filter_map(groups_of)
            .filter(|(_, g, members)| *g != gid && members.iter().any(|m| m == name))
            .map(|(_, g, _)| g)
            .collect(),
        None => Vec::new(),
    };
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home: passwd_entry.map(|e| e.3).filter(|h| h.starts_with('/')),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\napp:x:1234:1234::/srv/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1234:\nstaff:x:50:app,other\n";

    #[test]
    fn users_resolve_by_name_number_and_group() {
        let app = resolve_user("app", PASSWD, GROUP).unwrap();
        assert_eq!(
            (app.uid, app.gid, app.groups.clone()),
            (1234, 1234, vec![50])
        );
        assert_eq!(app.home.as_deref(), Some("/srv/app"));
        let root = resolve_user("0", PASSWD, GROUP).unwrap();
        assert_eq!(
            (root.uid, root.gid, root.name.as_deref()),
            (0, 0, Some("root"))
        );
        let pair = resolve_user("1234:staff", PASSWD, GROUP).unwrap();
        assert_eq!((pair.uid, pair.gid), (1234, 50));
        let numeric = resolve_user("4242:4343", "", "").unwrap();
        assert_eq!((numeric.uid, numeric.gid, numeric.home), (4242, 4343, None));
        assert!(resolve_user("ghost", PASSWD, GROUP)
            .unwrap_err()
            .contains("`ghost`"));
        assert!(resolve_user("app:nogroup", PASSWD, GROUP).is_err());
    }

    #[test]
    fn config_keeps_what_a_sandbox_honours() {
        let c = ImageConfig::parse(
            r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin","A=b=c"],
            "WorkingDir":"/srv/app","User":"app","Cmd":["python3","x.py"]}}"#,
        )
        .unwrap();
        assert_eq!(
            c.env,
            [
                ("PATH".into(), "/usr/bin".into()),
                ("A".into(), "b=c".into())
            ]
        );
        assert_eq!(c.working_dir.as_deref(), Some("/srv/app"));
        assert_eq!(c.command(), Some(vec!["python3".into(), "x.py".into()]));
        let err = ImageConfig::parse(r#"{"architecture":"arm64","os":"linux"}"#).unwrap_err();
        assert!(err.contains("linux/arm64"), "{err}");
    }
}
