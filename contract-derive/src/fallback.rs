//! What the derive emits when the input is invalid: the errors, plus stub impls so code
//! that uses the struct (`Event::contract()`, `guard.contract::<Event>()`) sees only the
//! real error and no follow-on "trait not implemented" errors.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::attr::Backend;
use crate::expand::backend_tokens;

/// The compile errors and stub impls of `Columns`, `Contract` and every `TypeChecks`.
pub(crate) fn expand(input: &DeriveInput, krate: &TokenStream, error: &syn::Error) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let struct_name = ident.to_string();
    let errors = error.to_compile_error();
    let type_checks = Backend::ALL.iter().map(|&backend| {
        let (db, gate) = backend_tokens(krate, backend);
        quote! {
            #gate! {
                #[automatically_derived]
                impl #impl_generics #krate::__private::TypeChecks<#db> for #ident #ty_generics #where_clause {
                    fn type_checks() -> #krate::__private::Vec<#krate::__private::TypeCheck<#db>> {
                        #krate::__private::Vec::new()
                    }
                }
            }
        }
    });
    quote! {
        #errors
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #krate::__private::Columns for #ident #ty_generics #where_clause {
                fn columns() -> #krate::__private::Vec<#krate::__private::ColumnContract> {
                    #krate::__private::Vec::new()
                }
            }
            #[automatically_derived]
            impl #impl_generics #krate::__private::Contract for #ident #ty_generics #where_clause {
                const STRUCT_NAME: &'static str = #struct_name;
                const TABLE: &'static str = "";
            }
            #(#type_checks)*
        };
    }
}
