//! Prints the OpenAPI document the code generates; `make openapi` writes it to openapi/openapi.json.
fn main() {
    println!("{}", dlserve::api::openapi().to_pretty_json().expect("the OpenAPI document serialises"));
}
