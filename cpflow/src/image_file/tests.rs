//! The codecs against what they must give: pixels written and read back, PNG variants with
//! known pixels (palettes, low and 16-bit depths, alpha), JPEGs of known content, and the
//! pixels the `image` crate 0.25 decoded from the bundled data (digests recorded with it).

use super::*;
use crate::error::CpflowError;

/// The bytes decode to the pixels; `write_png` writes exactly them.
#[test]
fn the_written_file_is_the_encoded_png() {
    let pixels = [0u8, 64, 128, 255, 10, 20];
    let png = encode_png((3, 2), PngColor::Gray8, &pixels).unwrap();
    let img = decode_rgb8(&png).unwrap();
    assert_eq!(
        (img.dimensions(), img.to_pil_gray()),
        ((3, 2), pixels.to_vec())
    );
    let path = std::env::temp_dir().join(format!("cpflow-png-{}.png", std::process::id()));
    write_png(&path, (3, 2), PngColor::Gray8, &pixels).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), png);
    std::fs::remove_file(&path).ok();
}

/// An image the encoder refuses (a zero width) is an invalid input naming the file, and
/// nothing is written; so are pixels that do not fill the image.
#[test]
fn an_image_that_cannot_be_encoded_is_invalid_input() {
    let path = std::env::temp_dir().join(format!("cpflow-png-bad-{}.png", std::process::id()));
    for (size, pixels) in [((0, 2), &[][..]), ((2, 2), &[0; 3][..])] {
        let err = write_png(&path, size, PngColor::Gray8, pixels).unwrap_err();
        assert!(
            matches!(&err, CpflowError::InvalidInput(m)
                if m.contains(&path.display().to_string()) && m.contains("cannot be a PNG")),
            "{size:?}: {err:?}"
        );
        assert!(!path.exists());
    }
}

/// A PNG of `w × h` samples as given (any colour type and depth the `png` crate writes).
fn png_of(
    (w, h): (u32, u32),
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    palette: Option<&[u8]>,
    trns: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, w, h);
    e.set_color(color);
    e.set_depth(depth);
    if let Some(p) = palette {
        e.set_palette(p.to_vec());
    }
    if let Some(t) = trns {
        e.set_trns(t.to_vec());
    }
    let mut wr = e.write_header().unwrap();
    wr.write_image_data(data).unwrap();
    wr.finish().unwrap();
    out
}

/// What `image`'s `to_rgb8` made of each PNG colour type, pixel by pixel: low depths scaled
/// to 0..255, 16-bit samples rounded (`(v + 128) / 257`: 128 → 0, 129 → 1, 257·128 → 128,
/// 65535 → 255), palettes looked up, grey replicated, alpha (and tRNS) dropped without
/// compositing.
#[test]
fn png_colour_types_decode_as_the_image_crate_did() {
    use png::BitDepth::{Eight, One, Sixteen};
    use png::ColorType::{Grayscale, GrayscaleAlpha, Indexed, Rgb, Rgba};
    let grey = |v: &[u8]| v.iter().flat_map(|&g| [g, g, g]).collect::<Vec<u8>>();
    // 1 bit: 0b1010_0000 is the row 1, 0, 1 (3 wide; the rest is padding).
    let img = decode_rgb8(&png_of((3, 1), Grayscale, One, &[0b1010_0000], None, None)).unwrap();
    assert_eq!(img.pixels, grey(&[255, 0, 255]));
    let g16: Vec<u8> = [0u16, 128, 129, 257 * 128, 65535]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let img = decode_rgb8(&png_of((5, 1), Grayscale, Sixteen, &g16, None, None)).unwrap();
    assert_eq!(img.pixels, grey(&[0, 0, 1, 128, 255]));
    let rgb16: Vec<u8> = [65535u16, 0, 32896]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let img = decode_rgb8(&png_of((1, 1), Rgb, Sixteen, &rgb16, None, None)).unwrap();
    assert_eq!(img.pixels, vec![255, 0, 128]);
    // Alpha is dropped, not composited: a transparent pixel keeps its colour.
    let img = decode_rgb8(&png_of(
        (2, 1),
        GrayscaleAlpha,
        Eight,
        &[9, 0, 200, 255],
        None,
        None,
    ))
    .unwrap();
    assert_eq!(img.pixels, grey(&[9, 200]));
    let rgba = [1, 2, 3, 0, 250, 251, 252, 128];
    let img = decode_rgb8(&png_of((2, 1), Rgba, Eight, &rgba, None, None)).unwrap();
    assert_eq!(img.pixels, vec![1, 2, 3, 250, 251, 252]);
    // A palette with transparency: the colours.
    let palette = [10, 20, 30, 40, 50, 60];
    let png = png_of(
        (3, 1),
        Indexed,
        Eight,
        &[1, 0, 1],
        Some(&palette),
        Some(&[0, 255]),
    );
    let img = decode_rgb8(&png).unwrap();
    assert_eq!(img.pixels, vec![40, 50, 60, 10, 20, 30, 40, 50, 60]);
    // Grey with a tRNS colour key: the grey levels.
    let png = png_of((2, 1), Grayscale, Eight, &[7, 8], None, Some(&[0, 7]));
    assert_eq!(decode_rgb8(&png).unwrap().pixels, grey(&[7, 8]));
}

/// The encoder's bytes are those of the `image` crate's `PngEncoder::new` (checked against
/// it when this module replaced it): fast compression, adaptive filtering. This digest is of
/// a 17 × 9 RGB gradient encoded by both.
#[test]
fn png_bytes_are_those_the_image_crate_wrote() {
    let px: Vec<u8> = (0..17 * 9 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let png = encode_png((17, 9), PngColor::Rgb8, &px).unwrap();
    assert_eq!(decode_rgb8(&png).unwrap().pixels, px);
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&png)),
        "7fb16b5e4e0b223c7e9add8b6e98ac507488f5f251fd5c3d080c3770a4be0786"
    );
}

use sha2::Digest as _;

/// sha256 of `width, height` (little-endian u32) and the pixels.
fn pixels_digest(img: &Rgb8Image) -> String {
    let mut h = sha2::Sha256::new();
    h.update(img.width.to_le_bytes());
    h.update(img.height.to_le_bytes());
    h.update(&img.pixels);
    hex::encode(h.finalize())
}

/// A 13 × 11 grey JPEG (the `image` crate's encoder, quality 90, of `(37 i) mod 256`).
const GREY_JPEG: &str = concat!(
    "ffd8ffe000104a46494600010200000100010000ffc0000b08000b000d01011100ffdb004300030202030202",
    "0303030304030304050805050404050a070706080c0a0c0c0b0a0b0b0d0e12100d0e110e0b0b101610111314",
    "1515150c0f171816141812141514ffc4001f0000010501010101010100000000000000000102030405060708",
    "090a0bffc400b5100002010303020403050504040000017d0102030004110512213141061351610722711432",
    "8191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a43444546474849",
    "4a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798999aa2a3",
    "a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9ea",
    "f1f2f3f4f5f6f7f8f9faffda0008010100003f00af15b687e04d066f89de0a1a7b7c3bd4365bf89bc2573b0d",
    "bd9fda1843ba18dbe57b695a408d060ec2ff00283112b0d5d7ecbc49f06ed2c6f3e12e9fe20f1978335edf3c",
    "1a6e936373a85c68ae9b77412ba2b6623e60313b1de42bab6e31f99274be10d1ec3c1ffb58f8efc15a4595bd",
    "a78426fb207d0bca57b329736104b3c5e5302be5334d27eef1b02b6d0a1400303e1d6a97be06f15fc47f0de8",
    "9797165a2e8fe26d434fb1b6f35a4f2608ae658e34dce4b361540cb124e3924d7fffd9",
);

/// A grey JPEG decodes to the pixels `image` 0.25 gave (digest recorded with it), grey
/// replicated; cut short or with its header's size raised past the limit it is refused.
#[test]
fn a_grey_jpeg_decodes_as_the_image_crate_did_and_bad_ones_are_refused() {
    let jpeg = hex::decode(GREY_JPEG).unwrap();
    let img = decode_rgb8(&jpeg).unwrap();
    assert_eq!(img.dimensions(), (13, 11));
    assert!(img.pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    assert_eq!(
        pixels_digest(&img),
        "7a8d52d4a7cbc667925a8584027a4884ecc354b25af83aecf4ea10eb40ed0f81"
    );
    // The frame header (SOF0: ff c0, length, precision, height, width) claims 65535 × 65535.
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    let mut huge = jpeg.clone();
    huge[sof + 5..sof + 9].copy_from_slice(&[0xff; 4]);
    assert!(
        matches!(
            decode_rgb8(&huge),
            Err(ImageFileError::TooLarge {
                width: 65535,
                height: 65535
            })
        ),
        "{:?}",
        decode_rgb8(&huge).map(|i| i.dimensions())
    );
    let err = decode_rgb8(&jpeg[..sof]).unwrap_err();
    assert!(
        matches!(err, ImageFileError::Decode { format: "JPEG", .. }),
        "{err}"
    );
}

/// A PNG whose header claims more than [`MAX_DECODED_BYTES`] is refused before any pixel
/// buffer is allocated; a cut one is a decode error.
#[test]
fn oversized_and_truncated_pngs_are_refused() {
    let png = encode_png((2, 2), PngColor::Rgb8, &[0; 12]).unwrap();
    // IHDR's width and height (bytes 16..24), then its CRC (bytes 29..33).
    let mut huge = png.clone();
    huge[16..24].copy_from_slice(&[0, 0, 0x80, 0, 0, 0, 0x80, 0]);
    let crc = crc32(&huge[12..29]);
    huge[29..33].copy_from_slice(&crc.to_be_bytes());
    let err = decode_rgb8(&huge).unwrap_err();
    assert!(
        matches!(
            err,
            ImageFileError::TooLarge {
                width: 32768,
                height: 32768
            }
        ),
        "{err}"
    );
    let err = decode_rgb8(&png[..png.len() - 20]).unwrap_err();
    assert!(
        matches!(err, ImageFileError::Decode { format: "PNG", .. }),
        "{err}"
    );
}

/// CRC-32 (ISO-HDLC, PNG's chunk checksum), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn shared_data() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

/// The toy densities' PNGs (RGB and palette) decode to the pixels `image` 0.25 gave, and
/// to the same PIL grey levels (digests recorded with it).
#[test]
fn the_bundled_toy_pngs_decode_as_the_image_crate_did() {
    for (file, rgb, grey) in [
        (
            "github.png",
            "4df0387b03ef9fa6ac4052130824fd318430f8828ff02f949a27dce9a76e7161",
            "48ddde314b8bfe7d5da13058f3ceec4d79f89c4b9e88d196b4a28ae9224a3a0b",
        ),
        (
            "twitter.png",
            "690d016746e3e4ef940081730dd3b6431685e02571e887630ddbe7e3976600c6",
            "226e07bf2298fe8b82cb1724913391fb9ff3e06b25c51538771e58e7f13e24e1",
        ),
    ] {
        let img = read_rgb8(shared_data().join("toy2d").join(file)).unwrap();
        assert_eq!(pixels_digest(&img), rgb, "{file}");
        assert_eq!(
            hex::encode(sha2::Sha256::digest(img.to_pil_gray())),
            grey,
            "{file}"
        );
    }
}

/// The first three BSDS300 JPEGs of the bundled archive decode to the pixels `image` 0.25
/// gave (digests recorded with it; all 300 were compared with it when this module replaced
/// it).
#[cfg(feature = "datasets")]
#[test]
fn bsds300_jpegs_decode_as_the_image_crate_did() {
    use std::io::Read;
    let archive = shared_data().join("bsds300/BSDS300-images.tar.gz");
    let file = std::io::BufReader::new(std::fs::File::open(archive).unwrap());
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let expected = [
        (
            "test/101085.jpg",
            "f3fe89b7f3abd5594ca5b798d22b939ee8adf23e0a0b67e4512fae4cf31d34b0",
        ),
        (
            "test/101087.jpg",
            "509d0135e88724baa624d14d4996d0f76979f2a7830d5aeff78f88a3a22ead4e",
        ),
        (
            "test/102061.jpg",
            "e5f8bc750f41e7bb72aa335750869991faf6c73da05820ab1ef034bb813a278a",
        ),
    ];
    let mut seen = 0;
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let Some(&(_, digest)) = expected.iter().find(|(n, _)| name.ends_with(n)) else {
            continue;
        };
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let img = decode_rgb8(&bytes).unwrap();
        assert!(
            matches!(img.dimensions(), (481, 321) | (321, 481)),
            "{name}"
        );
        assert_eq!(pixels_digest(&img), digest, "{name}");
        seen += 1;
        if seen == expected.len() {
            break;
        }
    }
    assert_eq!(seen, expected.len());
}
