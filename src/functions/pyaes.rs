//! pyaes: AES-128 encryption and decryption of a text, `rounds` times, as in the original
//! MicroFaaS (which used the pure-Python `pyaes` package; the original reference lists ECB).
//!
//! Input `{"rounds": R, "text"?: string, "length"?: L, "seed"?: S, "key"?: hex}` (original:
//! a 16k-character text, rounds up to 10000; default inputs here use 1..=100 rounds so one
//! invocation stays well under a second on a BeagleBone). Without `text` the text is `L`
//! (default 16384, at most 1 MiB) characters of `rng::ALNUM` from `SplitMix64(S)` (default
//! seed 0). It is PKCS#7-padded to whole blocks; the key defaults to the original's
//! `a1f6258c877d5fcd8964484538bfc92c`. Each round encrypts the padded text in ECB mode,
//! decrypts the ciphertext and checks it against the text. Output `{"rounds": R, "bytes":
//! ciphertext length, "ciphertext_sha256": hex}`: what `openssl enc -aes-128-ecb -K <key>`
//! gives for the same text.

use aes::Aes128;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{
    FunctionError, MAX_TEXT, get_str, get_u64, hex, input_seed, rng::SplitMix64,
    text_or_generated, unhex,
};

const DEFAULT_KEY: [u8; 16] = [
    0xa1, 0xf6, 0x25, 0x8c, 0x87, 0x7d, 0x5f, 0xcd, 0x89, 0x64, 0x48, 0x45, 0x38, 0xbf, 0xc9, 0x2c,
];

type Block = GenericArray<u8, aes::cipher::consts::U16>;

pub fn run(input: &Value) -> Result<Value, FunctionError> {
    let rounds = get_u64(input, "rounds", None, u64::MAX)?;
    let key = match get_str(input, "key")? {
        None => DEFAULT_KEY.to_vec(),
        Some(k) => unhex(k)
            .filter(|k| k.len() == 16)
            .ok_or_else(|| FunctionError::BadInput("\"key\" must be 32 hex digits".into()))?,
    };
    let mut text = text_or_generated(input, "text", 16_384, MAX_TEXT)?.into_bytes();
    let pad = 16 - text.len() % 16;
    text.resize(text.len() + pad, pad as u8);
    let plain: Vec<Block> = text.chunks_exact(16).map(Block::clone_from_slice).collect();

    let cipher = Aes128::new(GenericArray::from_slice(&key));
    let mut sealed = plain.clone();
    for _ in 0..rounds {
        sealed.clone_from(&plain);
        cipher.encrypt_blocks(&mut sealed);
        let mut opened = sealed.clone();
        cipher.decrypt_blocks(&mut opened);
        if opened != plain {
            return Err(FunctionError::Failed("decryption did not restore the text".into()));
        }
    }
    if rounds == 0 {
        cipher.encrypt_blocks(&mut sealed);
    }
    let mut digest = Sha256::new();
    for block in &sealed {
        digest.update(block);
    }
    Ok(json!({
        "rounds": rounds,
        "bytes": sealed.len() * 16,
        "ciphertext_sha256": hex(&digest.finalize()),
    }))
}

pub fn input(rng: &mut SplitMix64) -> Value {
    json!({ "rounds": rng.range(1, 100), "length": 16_384, "seed": input_seed(rng) })
}
