//! Builds the clip-art ImageFolders under `sample-data/` from the unpacked Debian
//! packages `openclipart-png` and `tuxpaint-stamps-default` (run by
//! `scripts/make-clipart.sh`, which fetches them). The output depends only on the
//! package contents: files are chosen by a hash of their path, never by directory order
//! or time, so a rebuild writes the same bytes.
//!
//! Usage: make-clipart OPENCLIPART_ROOT TUXPAINT_ROOT OUT_DIR

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops::FilterType;
use image::{Rgb, RgbImage};

/// Stored side of every image: small enough that both sets stay a few MB.
const SIDE: u32 = 64;
/// At most this many images per class in the default set, so no class dominates; the
/// second set keeps fewer (it only checks that an ordering holds, and all of
/// `sample-data/` must stay under 25 MB).
const CAP: usize = 100;
const OBJECTS_CAP: usize = 60;

/// Where a class's images come from: (package, folder under its root, sub-folders left out).
type Source = (&'static str, &'static str, &'static [&'static str]);

struct Class {
    name: &'static str,
    sources: &'static [Source],
}

const OC: &str = "openclipart";
const TP: &str = "tuxpaint";

/// The default benchmark: everyday semantic categories an ImageNet model has seen.
const CLIPART: &[Class] = &[
    Class {
        name: "bird",
        sources: &[(OC, "animals/birds", &[]), (TP, "animals/birds", &[])],
    },
    Class {
        name: "building",
        sources: &[
            (OC, "buildings", &["furniture"]),
            (TP, "town/houses", &[]),
            (TP, "town/monuments", &[]),
        ],
    },
    Class {
        name: "dessert",
        sources: &[(OC, "food/desserts", &[])],
    },
    Class {
        name: "fruit",
        sources: &[(OC, "food/fruit", &[]), (TP, "food/fruit", &[])],
    },
    Class {
        name: "insect",
        sources: &[(OC, "animals/bugs", &[]), (TP, "animals/insects", &[])],
    },
    Class {
        name: "mammal",
        sources: &[
            (OC, "animals/mammals", &[]),
            (TP, "animals/mammals", &[]),
            (TP, "animals/marsupials", &[]),
        ],
    },
    Class {
        name: "musical-instrument",
        sources: &[(OC, "recreation/music", &[]), (TP, "hobbies/music", &[])],
    },
    Class {
        name: "plant",
        sources: &[(OC, "plants", &[]), (TP, "plants", &[])],
    },
    Class {
        name: "tool",
        sources: &[(OC, "tools", &["weapons", "toys"]), (TP, "household/tools", &[])],
    },
    Class {
        name: "vehicle",
        sources: &[(OC, "transportation/vehicles", &[]), (TP, "vehicles", &["ship", "flight"])],
    },
];

/// A second set of other categories, for checking that what was tuned on the default
/// carries over to classes it was not tuned on.
const OBJECTS: &[Class] = &[
    Class {
        name: "beverage",
        sources: &[(OC, "food/beverages", &[])],
    },
    Class {
        name: "computer-hardware",
        sources: &[(OC, "computer/hardware", &[])],
    },
    Class {
        name: "electronics",
        sources: &[(OC, "electronics", &[])],
    },
    Class {
        name: "office",
        sources: &[(OC, "office", &[])],
    },
    Class {
        name: "road-sign",
        sources: &[(OC, "transportation/roadsigns", &[]), (TP, "town/roadsigns", &[])],
    },
    Class {
        name: "smiley",
        sources: &[(OC, "people/smilies", &[])],
    },
    Class {
        name: "sport",
        sources: &[(OC, "recreation/sports", &[])],
    },
    Class {
        name: "weather",
        sources: &[(OC, "signs_and_symbols/weather", &[])],
    },
];

/// The order images are picked in. FNV-1a's shape with another multiplier (not FNV's
/// prime, so not `tdmr::engine::checkpoint::fnv1a`): the committed sets were chosen with
/// it, and changing it would choose other images.
fn selection_hash(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x1000_0000_01b3))
}

/// Every PNG under `dir`, skipping sub-folders named in `skip`, as sorted relative paths.
fn pngs(dir: &Path, skip: &[&str], out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if p.is_dir() {
            if !skip.contains(&name.as_str()) {
                pngs(&p, skip, out)?;
            }
        } else if name.ends_with(".png") {
            out.push(p);
        }
    }
    Ok(())
}

/// Alpha composited on white, padded to a white square, resized to `SIDE`.
fn square_on_white(path: &Path) -> Result<RgbImage> {
    let rgba = image::open(path)
        .with_context(|| format!("decoding {}", path.display()))?
        .to_rgba8();
    let (w, h) = rgba.dimensions();
    let side = w.max(h);
    let mut canvas = RgbImage::from_pixel(side, side, Rgb([255, 255, 255]));
    let (ox, oy) = ((side - w) / 2, (side - h) / 2);
    for (x, y, p) in rgba.enumerate_pixels() {
        let a = p[3] as u32;
        let mix = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        canvas.put_pixel(x + ox, y + oy, Rgb([mix(p[0]), mix(p[1]), mix(p[2])]));
    }
    Ok(image::imageops::resize(&canvas, SIDE, SIDE, FilterType::Lanczos3))
}

/// PNG at the encoder's best compression: the sets must fit the repository's size limit.
fn write_png(img: &RgbImage, path: &Path) -> Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let encoder = PngEncoder::new_with_quality(file, CompressionType::Best, PngFilter::Adaptive);
    img.write_with_encoder(encoder)?;
    Ok(())
}

fn slug(rel: &Path) -> String {
    rel.to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn build(set: &str, classes: &[Class], cap: usize, roots: &[(&str, PathBuf)], out: &Path) -> Result<()> {
    let dir = out.join(set);
    // Everything but the hand-written README.md is rebuilt.
    if dir.exists() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            match (p.is_dir(), p.file_name().and_then(|n| n.to_str())) {
                (true, _) => std::fs::remove_dir_all(&p),
                (false, Some("README.md")) => Ok(()),
                (false, _) => std::fs::remove_file(&p),
            }
            .with_context(|| format!("clearing {}", p.display()))?;
        }
    }
    let mut listing = String::from("class\tfile\tpackage\tsource\n");
    let mut summary = String::new();
    for class in classes {
        let mut found: Vec<(u64, &str, PathBuf, PathBuf)> = Vec::new();
        for &(pkg, folder, skip) in class.sources {
            let root = &roots.iter().find(|(p, _)| *p == pkg).context("unknown package")?.1;
            let mut files = Vec::new();
            pngs(&root.join(folder), skip, &mut files)?;
            for f in files {
                let rel = f.strip_prefix(root)?.to_path_buf();
                let key = selection_hash(format!("{pkg}/{}", rel.display()).as_bytes());
                found.push((key, pkg, rel, f));
            }
        }
        found.sort();
        let total = found.len();
        let class_dir = dir.join(class.name);
        std::fs::create_dir_all(&class_dir)?;
        // Files the decoder cannot read are left out (and named in CLASSES.md); the next
        // ones by hash take their place, so the cap still holds.
        let mut kept = 0;
        let mut unreadable = Vec::new();
        for (_, pkg, rel, full) in &found {
            if kept == cap {
                break;
            }
            let Ok(img) = square_on_white(full) else {
                unreadable.push(format!("{pkg}:{}", rel.display()));
                continue;
            };
            let prefix = if *pkg == OC { "oc" } else { "tp" };
            let file = format!("{prefix}-{}", slug(rel));
            write_png(&img, &class_dir.join(&file)).with_context(|| format!("writing {file}"))?;
            writeln!(listing, "{}\t{file}\t{pkg}\t{}", class.name, rel.display())?;
            kept += 1;
        }
        let sources: Vec<String> = class
            .sources
            .iter()
            .map(|(p, f, skip)| match skip {
                [] => format!("{p}:{f}"),
                s => format!("{p}:{f} (without {})", s.join(", ")),
            })
            .collect();
        let skipped = match unreadable.as_slice() {
            [] => String::new(),
            u => format!(" (unreadable, left out: {})", u.join(", ")),
        };
        writeln!(summary, "| {} | {kept} of {total} | {}{skipped} |", class.name, sources.join("; "))?;
    }
    if summary.is_empty() {
        bail!("no classes for {set}");
    }
    std::fs::write(dir.join("SOURCES.tsv"), listing)?;
    std::fs::write(
        dir.join("CLASSES.md"),
        format!("| class | images kept | source folders |\n|---|---|---|\n{summary}"),
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, oc, tp, out] = args.as_slice() else {
        bail!("usage: make-clipart OPENCLIPART_PNG_ROOT TUXPAINT_STAMPS_ROOT OUT_DIR");
    };
    let roots = [(OC, PathBuf::from(oc)), (TP, PathBuf::from(tp))];
    build("clipart", CLIPART, CAP, &roots, Path::new(out))?;
    build("clipart-objects", OBJECTS, OBJECTS_CAP, &roots, Path::new(out))?;
    Ok(())
}
