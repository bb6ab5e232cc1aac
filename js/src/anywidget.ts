// anywidget's models and views (model_module "anywidget"): the `anywidget` npm package's own
// front end, as JupyterLab runs it. Each model's ES module comes from the kernel in its `_esm`
// state and is imported from a blob URL; its `_css` becomes a <style> element.
//
// The package ships an AMD module (`define(["@jupyter-widgets/base"], factory)`): the build
// (build.mjs) exports its factory instead, and it is called here with the base classes.

import * as base from "@jupyter-widgets/base";
// @ts-ignore: the build turns the package's AMD module into `export default factory`
import factory from "anywidget";

let classes: Record<string, unknown> | null = null;

/** The module that `_model_module: "anywidget"` names: `{ AnyModel, AnyView }`. */
export function anywidgetModule(): Record<string, unknown> {
  classes ??= factory(base) as Record<string, unknown>;
  return classes;
}
