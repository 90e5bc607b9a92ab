use anyhow::Result;
use clap::Args;

use crate::output::outln;
use crate::probe::{self, Host, Status};

/// `kiln devices`
#[derive(Args)]
pub(crate) struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &DevicesArgs) -> Result<u8> {
    let host = Host::detect();
    let compiled = probe::compiled();
    let probes = probe::probe(&host, &compiled);
    let auto = probe::auto(&probes);
    if args.json {
        let rows: Vec<serde_json::Value> = probes
            .iter()
            .map(|p| {
                let (status, detail) = match &p.status {
                    Status::Ready(d) => ("ready", d),
                    Status::Software(d) => ("software", d),
                    Status::Unavailable(d) => ("unavailable", d),
                    Status::NotCompiled(d) => ("not_compiled", d),
                };
                serde_json::json!({ "device": p.device, "status": status, "detail": detail })
            })
            .collect();
        let out = serde_json::json!({ "compiled": compiled, "backends": rows, "auto": auto });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    outln!("compiled into this kiln: {}", compiled.join(", "));
    for p in &probes {
        let (word, detail) = match &p.status {
            Status::Ready(d) => ("ready", d),
            Status::Software(d) => ("software", d),
            Status::Unavailable(d) => ("unavailable", d),
            Status::NotCompiled(d) => ("-", d),
        };
        outln!("{:<8} {word:<12} {detail}", p.device);
    }
    outln!("--device auto picks: {auto}");
    Ok(0)
}
