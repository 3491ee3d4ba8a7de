output "resource_group_name" {
  value = azurerm_resource_group.main.name
}

output "workspace_name" {
  value = azurerm_machine_learning_workspace.main.name
}

output "workspace_id" {
  value = azurerm_machine_learning_workspace.main.id
}

output "compute_cluster_name" {
  value = azurerm_machine_learning_compute_cluster.main.name
}

output "container_registry_login_server" {
  value = azurerm_container_registry.main.login_server
}

output "storage_account_name" {
  value = azurerm_storage_account.main.name
}

output "key_vault_name" {
  value = azurerm_key_vault.main.name
}

output "aci_pull_identity_id" {
  description = "Put it in the variable group as ACI_PULL_IDENTITY_ID (ACI pulls the scoring image with it)."
  value       = azurerm_user_assigned_identity.aci_pull.id
}

output "application_insights_connection_string" {
  description = "Put it in the variable group as the secret APPLICATIONINSIGHTS_CONNECTION_STRING."
  value       = azurerm_application_insights.main.connection_string
  sensitive   = true
}
