//! Bootstrap credentials and the client files `stratus up` writes: `clouds.yaml` (clouds `stratus-admin` and
//! `stratus`) and `openrc`, all mode 0600 in the data dir. Passwords are generated on first start and kept in
//! `credentials.toml` so a restart reuses them.

use std::{collections::BTreeMap, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use identity::BootstrapSpec;
use serde::{Deserialize, Serialize};

use crate::{Config, Error};

pub const ADMIN_CLOUD: &str = "stratus-admin";
pub const DEMO_CLOUD: &str = "stratus";
pub const DEMO_PROJECT: &str = "demo";
pub const DEMO_USER: &str = "demo";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    pub admin_password: String,
    pub demo_password: String,
}

impl Credentials {
    /// Reads `<data_dir>/credentials.toml`, or generates and saves new passwords. A configured admin password wins.
    pub fn load_or_generate(config: &Config) -> Result<Credentials, Error> {
        let path = config.data_dir.join("credentials.toml");
        let mut creds = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<Credentials>(&text)
                .map_err(|e| Error::Config(format!("{} is damaged: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let creds = Credentials { admin_password: generate_password(), demo_password: generate_password() };
                let text = toml::to_string(&creds).map_err(|e| Error::Config(e.to_string()))?;
                write_private(&path, &text)?;
                creds
            }
            Err(source) => return Err(Error::Io { context: format!("cannot read {}", path.display()), source }),
        };
        if let Some(p) = &config.bootstrap.admin_password {
            creds.admin_password = p.clone();
        }
        Ok(creds)
    }

    pub fn bootstrap_spec(&self, config: &Config, services: Vec<(String, String, String)>) -> BootstrapSpec {
        let members = if config.bootstrap.demo {
            vec![(DEMO_PROJECT.into(), DEMO_USER.into(), self.demo_password.clone(), "member".into())]
        } else {
            Vec::new()
        };
        BootstrapSpec {
            admin_password: self.admin_password.clone(),
            admin_username: config.bootstrap.admin_username.clone(),
            admin_project: config.bootstrap.admin_project.clone(),
            region: config.region.clone(),
            services,
            members,
            reset_passwords: config.bootstrap.admin_password.is_some(),
        }
    }

    /// Writes `clouds.yaml` and `openrc` for the admin and (if enabled) demo users.
    pub fn write_client_files(&self, config: &Config, auth_url: &str) -> Result<(), Error> {
        let mut clouds = BTreeMap::new();
        let admin = CloudEntry::new(
            auth_url,
            &config.bootstrap.admin_username,
            &self.admin_password,
            &config.bootstrap.admin_project,
            &config.region,
        );
        clouds.insert(ADMIN_CLOUD.to_string(), admin);
        if config.bootstrap.demo {
            clouds.insert(
                DEMO_CLOUD.to_string(),
                CloudEntry::new(auth_url, DEMO_USER, &self.demo_password, DEMO_PROJECT, &config.region),
            );
        }
        let yaml = serde_norway::to_string(&CloudsYaml { clouds }).map_err(|e| Error::Config(e.to_string()))?;
        write_private(&config.data_dir.join("clouds.yaml"), &yaml)?;
        let openrc = format!(
            "# Source this file to use the openstack CLI as the admin user of this cloud.\n\
             export OS_AUTH_URL={auth_url}\n\
             export OS_IDENTITY_API_VERSION=3\n\
             export OS_USERNAME={}\n\
             export OS_PASSWORD='{}'\n\
             export OS_PROJECT_NAME={}\n\
             export OS_USER_DOMAIN_ID=default\n\
             export OS_PROJECT_DOMAIN_ID=default\n\
             export OS_REGION_NAME={}\n\
             export OS_INTERFACE=public\n",
            config.bootstrap.admin_username, self.admin_password, config.bootstrap.admin_project, config.region
        );
        write_private(&config.data_dir.join("openrc"), &openrc)
    }
}

#[derive(Serialize)]
struct CloudsYaml {
    clouds: BTreeMap<String, CloudEntry>,
}

#[derive(Serialize)]
struct CloudEntry {
    auth: AuthEntry,
    region_name: String,
    interface: String,
    identity_api_version: u32,
}

#[derive(Serialize)]
struct AuthEntry {
    auth_url: String,
    username: String,
    password: String,
    project_name: String,
    user_domain_id: String,
    project_domain_id: String,
}

impl CloudEntry {
    fn new(auth_url: &str, user: &str, password: &str, project: &str, region: &str) -> Self {
        CloudEntry {
            auth: AuthEntry {
                auth_url: auth_url.into(),
                username: user.into(),
                password: password.into(),
                project_name: project.into(),
                user_domain_id: "default".into(),
                project_domain_id: "default".into(),
            },
            region_name: region.into(),
            interface: "public".into(),
            identity_api_version: 3,
        }
    }
}

/// 24 random alphanumeric characters.
fn generate_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..24).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

/// Writes a file readable by its owner only, atomically.
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    let err = |source| Error::Io { context: format!("cannot write {}", path.display()), source };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
