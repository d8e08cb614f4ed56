//! Builds the crate again when a migration is added: `sqlx::migrate!` embeds
//! the files it found, and cargo notices a changed one but not a new one.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
