use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::model::Model;

/// Every parameter tensor of `model` as `(module path, values)`, in module order. For
/// histograms, inspection and exact comparisons (the values, without burn's parameter ids).
#[must_use]
pub fn parameters(model: &Model) -> Vec<(String, Vec<f32>)> {
    let mut collect = Collect::default();
    model.visit(&mut collect);
    collect.params
}

#[derive(Default)]
struct Collect {
    path: Vec<String>,
    params: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let mut name = self.path.join("/");
        if self.params.iter().any(|(p, _)| *p == name) {
            name = format!("{name}/{}", self.params.len());
        }
        self.params
            .push((name, param.val().into_data().iter::<f32>().collect()));
    }
}
