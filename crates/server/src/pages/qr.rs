//! The QR code of a payment page, drawn as inline SVG.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// `text` as an SVG QR code (medium error correction, with its quiet zone), or an empty string
/// when it is too long to encode (the page then shows no code; its address still works).
pub fn svg(text: &str) -> String {
    let Ok(code) = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M) else {
        return String::new();
    };
    let drawn = code
        .render::<svg::Color<'_>>()
        .min_dimensions(220, 220)
        .dark_color(svg::Color("#1d2430"))
        .light_color(svg::Color("#ffffff"))
        .quiet_zone(true)
        .build();
    // The renderer starts with an XML declaration, which has no place inside HTML.
    match drawn.find("<svg") {
        Some(start) => drawn[start..].to_owned(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_an_svg_of_the_address() {
        let drawn = super::svg("http://127.0.0.1:8080/pay/1-00");
        assert!(drawn.starts_with("<svg"), "{drawn}");
        assert!(
            drawn.contains("<path") || drawn.contains("<rect"),
            "{drawn}"
        );
        assert!(!drawn.contains("<?xml"));
    }

    #[test]
    fn an_address_too_long_for_a_code_draws_nothing() {
        assert_eq!(super::svg(&"x".repeat(10_000)), "");
    }
}
