/** The controller package's public surface. */
export { Controller, type ControllerState } from './controller.js';
export { Catalog, type BackupRecord, type ActivityRecord, type BackupState } from './catalog.js';
export { main as controllerMain } from './main.js';
