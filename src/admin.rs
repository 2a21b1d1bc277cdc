//! `trackhub trips …` and `trackhub devices …`: the admin REST calls from the command line, so a
//! new user can create a trip or register a phone without reading PROTOCOL.md. Each command
//! mints a short-lived admin token with the hub's secret (as `trackhub token` does), calls the
//! running hub, and prints its JSON answer; a refusal prints the problem body and fails.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::{json, Value};

use crate::auth::{load_secret, Keys, Role, DEFAULT_FLEET};

/// Where the hub is and how to sign in to it.
#[derive(Debug, Clone, clap::Args)]
pub struct HubArgs {
    /// Base URL of the hub.
    #[arg(long, env = "TRACKHUB_URL", default_value = "http://127.0.0.1:8080")]
    pub hub: String,
    /// The hub's data dir, for its signing secret.
    #[arg(long, env = "TRACKHUB_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "TRACKHUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Fleet to act in.
    #[arg(long, default_value = DEFAULT_FLEET)]
    pub fleet: String,
}

/// `trackhub trips`.
#[derive(Debug, clap::Subcommand)]
pub enum TripsCommand {
    /// Create a trip: `--driver D1 --stop 47.61,-122.33 --stop 47.62,-122.34,80` (lat,lon and
    /// an optional radius in metres), or the whole body from a JSON file (`--file trip.json`,
    /// PROTOCOL.md § Trips).
    Create {
        #[command(flatten)]
        hub: HubArgs,
        /// Trip id (generated when absent).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, required_unless_present = "file")]
        driver: Option<String>,
        /// `lat,lon[,radius_m]`, in order; repeat for each stop.
        #[arg(long = "stop", required_unless_present = "file")]
        stops: Vec<String>,
        #[arg(long, conflicts_with_all = ["driver", "stops"])]
        file: Option<PathBuf>,
    },
    /// List trips, newest first.
    List {
        #[command(flatten)]
        hub: HubArgs,
        /// `active` or `completed`.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One trip with its stops.
    Show {
        #[command(flatten)]
        hub: HubArgs,
        id: String,
    },
}

/// `trackhub devices`.
#[derive(Debug, clap::Subcommand)]
pub enum DevicesCommand {
    /// Register a phone running Traccar Client or OsmAnd for a driver; prints its key (shown
    /// once) and the server URL to enter in the app.
    Create {
        #[command(flatten)]
        hub: HubArgs,
        #[arg(long)]
        id: String,
        #[arg(long)]
        driver: String,
    },
    /// The fleet's devices.
    List {
        #[command(flatten)]
        hub: HubArgs,
    },
    /// One device (from the list).
    Show {
        #[command(flatten)]
        hub: HubArgs,
        id: String,
    },
}

/// A stop from `lat,lon[,radius_m]`.
fn parse_stop(i: usize, text: &str) -> anyhow::Result<Value> {
    let parts: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--stop {text}: expected lat,lon[,radius_m]"))?;
    let mut stop = match parts.as_slice() {
        [lat, lon] | [lat, lon, _] => json!({"id": format!("s{}", i + 1), "lat": lat, "lon": lon}),
        _ => anyhow::bail!("--stop {text}: expected lat,lon[,radius_m]"),
    };
    if let [_, _, radius] = parts.as_slice() {
        stop["radius_m"] = json!(radius);
    }
    Ok(stop)
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(args: &HubArgs) -> anyhow::Result<Self> {
        let secret = load_secret(&args.data_dir, args.jwt_secret.as_deref(), false)?;
        let token = Keys::from_secret(&secret).mint("trackhub-cli", Role::Admin, &args.fleet, 300);
        Ok(Self {
            http: reqwest::Client::new(),
            base: args.hub.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// Sends, and returns the JSON answer; a non-2xx answer is an error carrying its body.
    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let r = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("the hub at {} does not answer", self.base))?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("{status}: {body}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }
}

fn print(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Runs a `trips` command.
pub async fn trips(cmd: TripsCommand) -> anyhow::Result<()> {
    match cmd {
        TripsCommand::Create {
            hub,
            id,
            driver,
            stops,
            file,
        } => {
            let body = match file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", path.display()))?
                }
                None => {
                    let stops = stops
                        .iter()
                        .enumerate()
                        .map(|(i, s)| parse_stop(i, s))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let mut body = json!({"driver_id": driver, "stops": stops});
                    if let Some(id) = id {
                        body["id"] = json!(id);
                    }
                    body
                }
            };
            print(&Client::new(&hub)?.post("/v1/trips", &body).await?);
        }
        TripsCommand::List { hub, status, limit } => {
            let mut path = format!("/v1/trips?limit={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            print(&Client::new(&hub)?.get(&path).await?);
        }
        TripsCommand::Show { hub, id } => {
            print(&Client::new(&hub)?.get(&format!("/v1/trips/{id}")).await?);
        }
    }
    Ok(())
}

/// Runs a `devices` command.
pub async fn devices(cmd: DevicesCommand) -> anyhow::Result<()> {
    match cmd {
        DevicesCommand::Create { hub, id, driver } => {
            let client = Client::new(&hub)?;
            let made = client
                .post("/v1/devices", &json!({"id": id, "driver_id": driver}))
                .await?;
            print(&made);
            eprintln!(
                "Traccar Client: open this configuration link on the phone (or scan it as a QR \
                 code): {} . OsmAnd: set the server URL to {}/osmand?key={} and the device \
                 identifier to {id}. The key is shown only now. Phones reach the hub at its \
                 public address, not 127.0.0.1: see the README's section on phones.",
                made["traccar_client"]["config_link"]
                    .as_str()
                    .unwrap_or("?"),
                client.base,
                made["key"].as_str().unwrap_or("?")
            );
        }
        DevicesCommand::List { hub } => print(&Client::new(&hub)?.get("/v1/devices").await?),
        DevicesCommand::Show { hub, id } => {
            let list = Client::new(&hub)?.get("/v1/devices").await?;
            let found = list["devices"]
                .as_array()
                .and_then(|l| l.iter().find(|d| d["id"] == id.as_str()))
                .cloned()
                .with_context(|| format!("no device `{id}` in this fleet"))?;
            print(&found);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_parse_from_lat_lon_and_an_optional_radius() {
        assert_eq!(
            parse_stop(0, "47.61,-122.33").unwrap(),
            json!({"id":"s1","lat":47.61,"lon":-122.33})
        );
        assert_eq!(
            parse_stop(1, "47.61, -122.33, 80").unwrap(),
            json!({"id":"s2","lat":47.61,"lon":-122.33,"radius_m":80.0})
        );
        assert!(parse_stop(0, "47.61").is_err());
        assert!(parse_stop(0, "a,b").is_err());
    }
}
