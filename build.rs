//! Lists the PostgreSQL stories of the tests as ignored, with the reason, when no test server
//! is configured (`TILLGATE_TEST_POSTGRES_URL` unset outside CI), instead of letting them pass
//! without running. In CI a missing URL is a failure of the stories themselves. The same for
//! the browser tests, which need chromium and chromedriver.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(tillgate_no_postgres)");
    println!("cargo:rustc-check-cfg=cfg(tillgate_no_browser)");
    println!("cargo:rerun-if-env-changed=TILLGATE_CHROMEDRIVER");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=TILLGATE_TEST_POSTGRES_URL");
    println!("cargo:rerun-if-env-changed=CI");
    let url = std::env::var("TILLGATE_TEST_POSTGRES_URL").unwrap_or_default();
    if url.is_empty() && std::env::var_os("CI").is_none() {
        println!("cargo:rustc-cfg=tillgate_no_postgres");
    }
    // The browser tests need Debian's chromium and chromium-driver; outside CI, a machine
    // without them lists those tests as ignored. In CI they must run.
    let driver = std::env::var_os("TILLGATE_CHROMEDRIVER")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join("chromedriver"))
                    .find(|p| p.is_file())
            })
        });
    if driver.is_none() && std::env::var_os("CI").is_none() {
        println!("cargo:rustc-cfg=tillgate_no_browser");
    }
}
