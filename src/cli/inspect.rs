//! `tdmr inspect`: what a weight file holds, from its header.

use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct InspectArgs {
    /// A .safetensors checkpoint.
    pub(crate) weights: PathBuf,
    /// List every tensor: name, dtype, shape.
    #[arg(long)]
    pub(crate) keys: bool,
    /// Print the inspection as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let i = tdmr::models::inspect::inspect(&args.weights)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(());
    }
    print!("{}", i.report());
    if args.keys {
        for t in &i.tensors {
            println!("{:<60} {:<5} {:?}", t.name, t.dtype, t.shape);
        }
    }
    Ok(())
}
