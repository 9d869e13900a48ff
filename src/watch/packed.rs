//! A tenant's last good manifest as watch mode keeps it between passes: the specs as one
//! deflated JSON document instead of `serde_json::Value` trees.
//!
//! A loaded manifest of the shipped desired state holds about 270 KB of `Value` maps (keys,
//! index tables, boxed strings) for 110 KB of YAML; a thousand tenants kept them at 270 MB.
//! Deflated, the specs take a fraction of their JSON text (the test below checks under a third
//! for the shipped Pinot specs); at 1,000 tenants RSS went from 519 to 281 MB. A pass unpacks
//! (inflate plus one JSON parse) where it used to clone the trees, which costs about as much
//! (8.6 ms per pass of one tenant either way). Labels and annotations go into the pack too: a
//! `BTreeMap` of one or two labels allocates a whole node (about half a KB), which for the
//! shipped state's 33 resources was more than the deflated specs.

use std::collections::BTreeMap;
use std::io::Read;

use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use serde_json::Value;

use crate::manifest::Manifest;
use crate::resource::{Address, Resource};

pub struct PackedManifest {
    dir: std::path::PathBuf,
    /// The resources with their specs, labels and annotations taken out.
    resources: Vec<Resource>,
    /// What was taken out, in the order of `resources`, as a deflated JSON array of
    /// [`Contents`].
    contents: Vec<u8>,
}

/// What a resource keeps packed.
type Contents = (Value, BTreeMap<String, String>, BTreeMap<String, String>);

impl PackedManifest {
    pub fn pack(manifest: Manifest) -> Self {
        let mut resources = manifest.resources;
        let contents: Vec<Contents> = resources
            .iter_mut()
            .map(|r| {
                (
                    std::mem::take(&mut r.spec),
                    std::mem::take(&mut r.labels),
                    std::mem::take(&mut r.annotations),
                )
            })
            .collect();
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::fast());
        // Writing JSON into a Vec-backed encoder cannot fail.
        serde_json::to_writer(&mut encoder, &contents).expect("contents serialize to memory");
        let mut contents = encoder.finish().expect("deflate into memory");
        contents.shrink_to_fit();
        resources.shrink_to_fit();
        Self {
            dir: manifest.dir,
            resources,
            contents,
        }
    }

    /// The resources' addresses, without unpacking their specs.
    pub fn addresses(&self) -> impl Iterator<Item = &Address> {
        self.resources.iter().map(|r| &r.address)
    }

    /// The manifest as it was packed.
    pub fn unpack(&self) -> Manifest {
        let mut json = Vec::new();
        DeflateDecoder::new(self.contents.as_slice())
            .read_to_end(&mut json)
            .expect("inflate what pack deflated");
        let contents: Vec<Contents> =
            serde_json::from_slice(&json).expect("parse the JSON pack wrote");
        let resources = self
            .resources
            .iter()
            .zip(contents)
            .map(|(r, (spec, labels, annotations))| Resource {
                spec,
                labels,
                annotations,
                ..r.clone()
            })
            .collect();
        Manifest {
            dir: self.dir.clone(),
            resources,
        }
    }

    /// Bytes held for the packed contents (for the size test).
    #[cfg(test)]
    fn packed_len(&self) -> usize {
        self.contents.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_resources_unpack_as_loaded_and_pack_in_a_third_of_their_specs_json() {
        // The Pinot part (the largest specs; the rest needs credentials from the environment).
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("desired-state");
        let config = crate::config::TargetConfig::load(&shipped.join("ofctl.toml"), true)
            .expect("shipped config");
        let mut loaded = crate::manifest::load(&shipped.join("pinot"), &config.variables)
            .expect("shipped manifest");
        assert!(loaded.resources.len() >= 4, "{:?}", loaded.resources.len());
        // Labels and annotations are packed too: the shipped Pinot resources carry labels, and
        // one gets an annotation here.
        assert!(loaded.resources.iter().all(|r| !r.labels.is_empty()));
        loaded.resources[0].annotations.insert(
            crate::resource::annotations::ALLOW_REPLACE.into(),
            "true".into(),
        );
        let json_len: usize = loaded
            .resources
            .iter()
            .map(|r| serde_json::to_vec(&r.spec).unwrap().len())
            .sum();
        let packed = PackedManifest::pack(loaded.clone());
        let unpacked = packed.unpack();
        assert_eq!(unpacked.dir, loaded.dir);
        assert_eq!(unpacked.resources.len(), loaded.resources.len());
        for (a, b) in unpacked.resources.iter().zip(&loaded.resources) {
            assert_eq!(a.address, b.address);
            assert_eq!(a.source, b.source);
            assert_eq!(a.labels, b.labels);
            assert_eq!(a.annotations, b.annotations);
            assert_eq!(a.depends_on, b.depends_on);
            // Same values and the same key order (plans print keys in manifest order).
            assert_eq!(
                serde_json::to_string(&a.spec).unwrap(),
                serde_json::to_string(&b.spec).unwrap()
            );
        }
        assert!(
            packed.packed_len() * 3 < json_len,
            "packed {} bytes of {json_len} bytes of JSON",
            packed.packed_len()
        );
    }
}
